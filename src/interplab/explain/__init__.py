"""Automated feature labelling: explain dictionary latents from their contexts and score the
explanations against held-out text, with controls and planted ground truth (``interplab explain``)."""
