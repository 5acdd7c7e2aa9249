"""The `novamig` command.

Each sub-command lives in the package that owns its subject. The commands that talk to a cloud
(`run`, `cleanup`, `cloud`, `image upload`) are imported only when called: openstacksdk takes
0.3-0.6 s to import, and `novamig validate`, `report` or `--help` should not pay for it. Exit
codes are a contract (see README "Exit codes"): 0 success, 1 SLA or migration failed, 2 bad
input, 3 infrastructure error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from novamig import __version__
from novamig.embedded.config import DRIVER_CHOICES, GUEST_DRIVERS
from novamig.exitcodes import ExitCode
from novamig.guest.commands import cmd_image_build, cmd_image_prune
from novamig.hypervisor.selfcheck import cmd_selfcheck
from novamig.measure.sla_coverage import sla_warner
from novamig.report.commands import cmd_report
from novamig.report.compare import cmd_compare
from novamig.report.trend import DEFAULT_HTML, cmd_trend
from novamig.scenario.commands import cmd_schema, cmd_validate

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:
    # argparse has no public name for the object `add_subparsers` returns, and the class is not
    # subscriptable at run time before Python 3.12: the alias exists for the type checker only.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def _validate(args: argparse.Namespace) -> int:
    return cmd_validate(args.paths, args.overrides, sys.stdout, sla_warner(args.cloud))


def _schema(args: argparse.Namespace) -> int:
    return cmd_schema(sys.stdout)


def _image_build(args: argparse.Namespace) -> int:
    return cmd_image_build(args.kind, args.format, args.force)


def _image_prune(args: argparse.Namespace) -> int:
    return cmd_image_prune(args.keep, args.dry_run)


def _image_upload(args: argparse.Namespace) -> int:
    from novamig.cloud.image_commands import cmd_image_upload  # noqa: PLC0415 - openstacksdk, see module doc

    return cmd_image_upload(
        args.kind,
        args.cloud,
        name=args.name,
        visibility=args.visibility,
        replace=args.replace,
        force=args.force,
    )


def _selfcheck(args: argparse.Namespace) -> int:
    return cmd_selfcheck(as_json=args.json)


def _run(args: argparse.Namespace) -> int:
    from novamig.runner.commands import cmd_run  # noqa: PLC0415 - openstacksdk, see module doc

    return cmd_run(args.scenario, args.cloud, args.out, args.overrides, args.embedded_driver)


def _cleanup(args: argparse.Namespace) -> int:
    from novamig.runner.commands import cmd_cleanup  # noqa: PLC0415 - openstacksdk, see module doc

    return cmd_cleanup(args.cloud, args.yes, args.run)


def _cloud(args: argparse.Namespace) -> int:
    from novamig.embedded.commands import cmd_cloud  # noqa: PLC0415 - openstacksdk, see module doc

    return cmd_cloud(
        args.action,
        clouds_yaml_path=args.clouds_yaml,
        driver=args.driver,
        computes=args.computes,
        fake_migration_s=args.fake_migration_s,
    )


def _report(args: argparse.Namespace) -> int:
    return cmd_report(args.results, args.out)


def _compare(args: argparse.Namespace) -> int:
    return cmd_compare(args.results, args.factor, args.html)


def _trend(args: argparse.Namespace) -> int:
    return cmd_trend(args.inputs, args.html, args.factor)


def _add_validate(sub: Subcommands) -> None:
    p = sub.add_parser("validate", help="check scenario files; errors as FILE:LINE:COL: key.path: message")
    p.add_argument("paths", nargs="+", metavar="PATH", help="scenario YAML files (one or more)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a scenario value (validated like the file); repeatable (default: none)",
    )
    p.add_argument(
        "--cloud",
        metavar="NAME",
        default=None,
        help="the cloud the scenario will run on, as for `run`: warn about SLA figures its probes "
        "cannot measure there (default: the scenario's cloud:, else OS_CLOUD, else the embedded cloud)",
    )
    p.set_defaults(handler=_validate)


def _add_schema(sub: Subcommands) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editors)")
    p.set_defaults(handler=_schema)


def _add_run(sub: Subcommands) -> None:
    p = sub.add_parser(
        "run",
        help="run every case of a scenario and write results, HTML and JUnit",
        description="Run every case of a scenario (each matrix cell × repeat) and write results.json, "
        "index.html, junit.xml and logs. Exit 0 every SLA met, 1 an SLA or a migration failed, "
        "2 bad input, 3 infrastructure error, 130 interrupted (cleaned up, partial results written).",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file (see `novamig schema`)")
    p.add_argument(
        "--cloud",
        metavar="NAME",
        help="clouds.yaml entry to run on (default: the scenario's `cloud:`, else OS_CLOUD, else the "
        "embedded cloud started for this run)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: reports/<scenario name>-<UTC timestamp>/)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a scenario value, YAML syntax, validated like the file; repeatable (default: none)",
    )
    p.add_argument(
        "--embedded-driver",
        choices=GUEST_DRIVERS,
        default=None,
        help="when no cloud is named, the driver of the embedded cloud the run starts: novamig "
        "(QEMU guests under novamig's own virt driver) or libvirt (Nova's own LibvirtDriver, one "
        "libvirtd per compute); bad input together with a named cloud (default: "
        "$NOVAMIG_EMBEDDED_DRIVER, else novamig)",
    )
    p.set_defaults(handler=_run)


def _add_report(sub: Subcommands) -> None:
    p = sub.add_parser("report", help="re-render the HTML report from results.json")
    p.add_argument("results", metavar="RESULTS.json", help="a run's results.json")
    p.add_argument(
        "--out", metavar="FILE", help="HTML file to write (default: index.html beside RESULTS.json)"
    )
    p.set_defaults(handler=_report)


def _add_compare(sub: Subcommands) -> None:
    p = sub.add_parser(
        "compare",
        help="regression report between runs",
        description="Compare each NEW run with BASE, per case and metric: ratio of medians and a verdict "
        "(Mann-Whitney U test, p < 0.01, and a ratio beyond --factor). Exit 0 no regression, "
        "1 a metric regressed, 2 bad input.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="the base run first, then newer runs")
    p.add_argument(
        "--factor",
        type=float,
        default=1.1,
        metavar="X",
        help="a change counts when NEW/BASE is beyond X or below 1/X (default: 1.1)",
    )
    p.add_argument("--html", metavar="FILE", help="also write the comparison as an HTML page (default: none)")
    p.set_defaults(handler=_compare)


def _add_trend(sub: Subcommands) -> None:
    p = sub.add_parser(
        "trend",
        help="figures of many runs of one scenario over time, and the run where a metric moved",
        description="Group runs by the scenario as run (a hash of results.json's scenario), order them by "
        "start time, and show per case and metric the min/median/p95/max of each run, with the run where "
        "the median stepped beyond --factor. Writes a terminal summary and one HTML page. Exit 0, "
        "2 bad input.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="RESULTS.json|DIR",
        help="results files, or directories searched (recursively) for results.json",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        default=DEFAULT_HTML,
        help=f"the HTML page to write (default: {DEFAULT_HTML} in the current directory)",
    )
    p.add_argument(
        "--factor",
        type=float,
        default=1.1,
        metavar="X",
        help="a step counts when the median moved beyond X or below 1/X (default: 1.1)",
    )
    p.set_defaults(handler=_trend)


def _add_cleanup(sub: Subcommands) -> None:
    p = sub.add_parser("cleanup", help="remove every cloud resource tagged by novamig")
    p.add_argument(
        "--cloud",
        metavar="NAME",
        help="clouds.yaml entry (default: OS_CLOUD, else the embedded cloud if it is up)",
    )
    p.add_argument("--yes", action="store_true", help="delete (default: list only)")
    p.add_argument(
        "--run",
        metavar="ID",
        help="only the resources of this run (its id, printed when it starts) (default: every run's; "
        "a run still going on this machine keeps its resources unless you confirm)",
    )
    p.set_defaults(handler=_cleanup)


def _add_cloud(sub: Subcommands) -> None:
    p = sub.add_parser(
        "cloud",
        help="the embedded cloud: up, down, status",
        description="Start the embedded cloud for other tools and leave it running (up), say what runs "
        "(status), stop it (down). Exit 0 done, 2 the clouds.yaml cannot take the entries (nothing "
        "started), 3 infrastructure error.",
    )
    p.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start it in $NOVAMIG_EMBEDDED_DIR (default: ~/.local/state/novamig/novamig-embedded) "
        "and add the clouds.yaml entries novamig-embedded and novamig-embedded-member; down: remove "
        "those entries, stop it and remove its work directory; status: what runs",
    )
    p.add_argument(
        "--clouds-yaml",
        metavar="PATH",
        help="the clouds.yaml up adds the entries to, everything else in it kept (default: "
        "$NOVAMIG_CLOUDS_YAML, else $OS_CLIENT_CONFIG_FILE, else ~/.config/openstack/clouds.yaml); "
        "down takes them out of it (default: the file up used)",
    )
    p.add_argument(
        "--driver",
        choices=DRIVER_CHOICES,
        default="novamig",
        help="up: novamig (default: QEMU guests under novamig's own virt driver, the measurement); "
        "libvirt: Nova's own LibvirtDriver, one libvirtd per compute in namespaces of its own (the "
        "code path of a DevStack live-migration job); fake: the scale mode, Nova's live-migrating "
        "fake driver on --computes computes, no guests and no downtime figures",
    )
    p.add_argument(
        "--computes", type=int, default=2, metavar="N", help="up: how many compute hosts (default 2)"
    )
    p.add_argument(
        "--fake-migration-s",
        type=float,
        default=None,
        metavar="S",
        help="up --driver fake: how long each live migration takes (default 1 s)",
    )
    p.set_defaults(handler=_cloud)


def _add_image(sub: Subcommands) -> None:
    p = sub.add_parser("image", help="guest images")
    image_sub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = image_sub.add_parser("build", help="build a guest image (cached)")
    b.add_argument(
        "kind", nargs="?", choices=["tiny", "full"], default="tiny", help="which image (default: tiny)"
    )
    b.add_argument(
        "--format",
        choices=["initramfs", "qcow2"],
        default=None,
        help="default: the embedded cloud's form (tiny: kernel + initramfs; full: kernel, module initramfs, "
        "ext4 root); qcow2 (full only): the bootable cloud-init disk for Glance",
    )
    b.add_argument("--force", action="store_true", help="rebuild even when cached (default: off)")
    b.set_defaults(handler=_image_build)
    u = image_sub.add_parser(
        "upload", help="build (cached) and upload the Glance form of a guest image to a cloud's Image service"
    )
    u.add_argument(
        "kind", nargs="?", choices=["tiny", "full"], default="full", help="which image (default: full)"
    )
    u.add_argument("--cloud", metavar="NAME", help="clouds.yaml entry (default: OS_CLOUD)")
    u.add_argument("--name", metavar="IMAGE", help="image name (default: novamig-full)")
    u.add_argument(
        "--visibility",
        choices=["private", "shared", "community", "public"],
        default="private",
        help="default private; public needs the admin role",
    )
    u.add_argument(
        "--replace",
        action="store_true",
        help="replace an image of that name from another build (default: off, refuse)",
    )
    u.add_argument("--force", action="store_true", help="rebuild the image even when cached (default: off)")
    u.set_defaults(handler=_image_upload)
    r = image_sub.add_parser(
        "prune", help="remove old builds from the image cache (keeps the newest of each kind)"
    )
    r.add_argument("--keep", type=int, default=1, metavar="N", help="newest builds kept per kind (default 1)")
    r.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing (default: off)")
    r.set_defaults(handler=_image_prune)


def _add_selfcheck(sub: Subcommands) -> None:
    p = sub.add_parser("selfcheck", help="check that this machine can run novamig and measures right")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")
    p.set_defaults(handler=_selfcheck)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novamig",
        description="Test and validation harness for OpenStack Nova live migration.",
    )
    parser.add_argument("--version", action="version", version=f"novamig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_validate(sub)
    _add_schema(sub)
    _add_run(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_trend(sub)
    _add_cleanup(sub)
    _add_cloud(sub)
    _add_image(sub)
    _add_selfcheck(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("novamig: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
