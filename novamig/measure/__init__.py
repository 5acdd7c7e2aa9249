"""Measurement: every probe, the contract they share, their registry and the SLA checks.

`contract` is what every vantage point is given and hands back (`ServerInfo`, `CaseClock`,
`ProbeFigure`, `Probe`, `Unavailable`); `registry.probes_for` picks the probes of a case on a cloud;
`sla` judges the figures. One module per vantage point: `network` (`NetworkProbe`, echo from the
runner's side; its prober process is `echo`), `heartbeat_udp` (the guest agent's beats over UDP; its
collector process is `heartbeat_udp_collector`), `locust` (request gaps from Locust's records),
`embedded_figures` (what the embedded cloud's driver recorded) and `libvirt_jobstats` (libvirt's
job statistics over SSH). docs/measurement.md says what each figure means. Nothing is imported here
on purpose: the prober starts as ``python -m novamig.measure.echo`` and should load nothing but its
own module and `probe_process` (the scaffolding it shares with the UDP heartbeat collector). `gaps`
is the arithmetic the network and UDP heartbeat figures share, `spawned_probe` the runner's side of
their processes.
"""
