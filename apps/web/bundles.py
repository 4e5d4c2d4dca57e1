"""How the page loads a viewer's bundle (built by `make vendor` into vendor/NAME/NAME.js): as soon as an
element the viewer mounts on appears, or while the page is idle after loading, whichever comes first, so that
opening a case rarely waits for the script and a page that never shows the viewer costs only an idle fetch."""

from __future__ import annotations

IDLE_AFTER_LOAD_MS = 1500


def bundle_head(element_class: str, name: str, stylesheet: bool = False) -> str:
    src = f"/vendor/{name}/{name}.js"
    style = f'<link rel="stylesheet" href="/vendor/{name}/{name}.css">\n' if stylesheet else ""
    return f"""{style}<script>
(() => {{
  let idle = false;
  const load = () => {{
    if ((idle || document.querySelector(".{element_class}")) && !document.getElementById("{name}-bundle")) {{
      document.head.append(Object.assign(document.createElement("script"), {{id: "{name}-bundle", src: "{src}"}}));
    }}
  }};
  new MutationObserver(load).observe(document.documentElement, {{childList: true, subtree: true}});
  const soon = () => setTimeout(() => {{ idle = true; load(); }}, {IDLE_AFTER_LOAD_MS});
  // Gradio adds this to the page after it has loaded: the load event may be past already
  if (document.readyState === "complete") soon(); else addEventListener("load", soon);
}})();
</script>"""
