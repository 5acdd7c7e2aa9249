"""The runner: one scenario's cases on one cloud — provision → migrate → collect → clean.

Modules, one job each: `commands` (the `run`/`cleanup` CLI handlers and exit codes), `run` (cases in
order, outputs after each), `case` (one case: host policy, fleet, concurrent migration sequences),
`migration_watcher` (one migration: request, poll ≤ 0.5 s, policy, record), `poller` (the case's
one batched poller feeding every migration's watcher), `timeline` (duration and phases from
the recorded statuses), `targets` (auto | HOST | round-robin | drain:HOST, ping-pong), `sla`
(verdicts), `probes` (the downtime vantage points plug-in), `junit`, `live` (terminal view),
`signals` (SIGINT/SIGTERM → orderly stop), `plan` (the scenario → `CasePlan` adapter), `fleet`
(servers through Nova), `clock` (case-relative monotonic time).

Duration of a migration: from the live-migrate request to the first observation of the migration
``completed`` with the server ACTIVE, without task, on the destination host.
"""
