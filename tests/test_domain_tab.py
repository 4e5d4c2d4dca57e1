"""A domain adds its own tab (viewer, tools, prompts) through the plugin contract, with no change to the app."""

from __future__ import annotations

from gradio_client import handle_file
from helpers import png_bytes
from webapp import serve

from loupe.core.plugins import Domain, DomainTab
from loupe.domains.general import GeneralDomain


class ProbeDomain(GeneralDomain):
    """A fourth domain, defined outside the package: a custom viewer and a tool of its own."""

    name = "probe"
    title = "Probe images"

    def build_tab(self, tab: DomainTab) -> None:
        import gradio as gr

        tab.add_prompts(["Measure the bright region."])
        tab.set_viewer(lambda assets, highlights: "".join(
            f'<p class="probe">probe view of {a.url}</p>' for a in assets))
        measure = gr.Button("Measure", elem_id="probe-measure")
        result = gr.Markdown(elem_id="probe-result")
        measure.click(lambda case_id: f"measuring case {case_id}", tab.case_id, result, api_name="probe_measure")


def test_a_new_domain_brings_its_tab_viewer_and_tools(tmp_path):
    assert isinstance(ProbeDomain(), Domain)
    with serve(tmp_path / "home", None, {"ann": "user"}, domains={"probe": ProbeDomain()}) as served:
        config = served.http("ann").get("/config").json()
        labels = {str(c["props"].get("label") or c["props"].get("value")) for c in config["components"]}
        assert {"General images", "Probe images", "Measure", "Measure the bright region."} <= labels
        ann = served.client("ann")
        image = tmp_path / "p.png"
        image.write_bytes(png_bytes((40, 30)))
        out = ann.predict(handle_file(str(image)), "probe case", api_name="/probe_create_case")
        assert out[1].startswith('<p class="probe">probe view of /case-assets/')  # the domain's own viewer
        assert ann.predict(api_name="/probe_measure") == "measuring case 1"  # its tool sees the open case
        [case] = served.service.store.list_cases(served.service.user("ann"), domain="probe")
        assert case.title == "probe case"
        assert served.service.store.list_cases(served.service.user("ann"), domain="general") == []
