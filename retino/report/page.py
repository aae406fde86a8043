"""The HTML page that ``dvc plots show`` and ``dvc plots diff`` fill, working offline.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN and declares no
character set, so offline it shows only the PNG figures. This page inlines the three
libraries from the ``vl-convert-python`` package (maintained by the Vega project,
installed with retino) and declares UTF-8. ``.dvc/config`` points DVC at it
(``plots.html_template``); the plots-page stage writes it.
"""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>retino plots</title>
<script>
/* Vega, Vega-Lite and Vega-Embed {versions}, bundled by vl-convert-python */
{bundle}
</script>
<style>
  body { font-family: system-ui, sans-serif; margin: 24px; }
  table { border-spacing: 15px; }
  img { max-width: 960px; }
</style>
</head>
<body>
<h1>retino plots</h1>
<p>Learning curves and confusion matrices of the four models, then the Result Comparison
figures and confusion heatmaps (PNG). Written by <code>dvc plots show</code> or
<code>dvc plots diff</code>; works offline.</p>
{plot_divs}
</body>
</html>
"""


def plots_page() -> str:
    """The page, with ``{plot_divs}`` left for DVC to fill."""
    import vl_convert

    # "</script" inside the bundle would end the script element early
    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    return (PAGE.replace("{versions}", f"(vl-convert {vl_convert.__version__})")
            .replace("{bundle}", bundle))
