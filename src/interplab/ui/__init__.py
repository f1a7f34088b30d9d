"""``interplab ui``: a local web app over run records, dictionaries' feature statistics and a live
model (prompt explorer, steering playground). Every asset ships in the package or in an installed
Python package (Plotly's JS from the ``plotly`` wheel): no CDN, no network, no build step."""
