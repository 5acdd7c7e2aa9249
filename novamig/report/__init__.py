"""Reports rendered from results.json alone: `render.render_index` (index.html: `svg` primitives,
`charts`, `summary` figures, `matrix` grids), `commands.cmd_report`, and `compare.cmd_compare`
(`novamig compare`, deciding with the Mann-Whitney U test of `utest`). See docs/reports.md."""
