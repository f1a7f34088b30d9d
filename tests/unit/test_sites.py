import pytest

from interplab.core.errors import SiteError
from interplab.core.sites import Site, SiteKind, as_sites

ROUND_TRIP = [
    "embed", "L0.resid_pre", "L5.resid_mid", "L29.resid_post", "L3.attn_out", "L3.mlp_out",
    "L3.attn.z", "L3.attn.z[h7]", "L1.attn.q[h0]", "L1.attn.k[h2]", "L1.attn.v",
    "L2.attn.pattern[h1]", "L4.mlp.hidden", "ln_final", "logits",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_string_form_round_trips(text):
    site = Site.parse(text)
    assert str(site) == text
    assert Site.parse(str(site)) == site
    assert eval(repr(site).replace("Site(", "Site.parse(")) == site


def test_parse_fields():
    site = Site.parse("L3.attn.z[h7]")
    assert (site.layer, site.kind, site.head) == (3, SiteKind.Z, 7)
    assert Site(3, "attn.z", 7) == site
    assert as_sites("L0.resid_pre") == [Site(0, SiteKind.RESID_PRE)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("L1.resid_preX", "Cannot parse site 'L1.resid_preX'"),
        ("resid_pre", "needs a layer"),
        ("L1.logits", "has no layer"),
        ("L1.resid_pre[h2]", "has no heads"),
        ("Lx.attn_out", "Cannot parse site"),
    ],
)
def test_bad_sites_are_refused_with_a_teaching_message(text, message):
    with pytest.raises(SiteError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Site.parse(text)


def test_unknown_kind_lists_valid_choices():
    with pytest.raises(SiteError, match="Valid kinds: .*'resid_pre'"):
        Site(0, "resid")
