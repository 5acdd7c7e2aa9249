"""Reports rendered from results.json: `render.render_index` (index.html), `commands.cmd_report`."""
