"""Reports rendered from results.json alone: `render.render_index` (index.html: `svg` primitives,
`charts`, `summary` figures, `matrix` grids, `explain`: why the vantage points differ),
`commands.cmd_report`, `compare.cmd_compare` (`novamig compare`, deciding with the Mann-Whitney U
test of `utest`) and `trend.cmd_trend` (`novamig trend`: many runs of one scenario, and the run
where a metric stepped). See docs/reports.md."""
