"""The `plateau-lstm` command: one subcommand per pipeline step, the container's entrypoint.

Exit status: 0 success, 2 bad input or options (one message, no traceback), 1 a run that
could not finish (diverged, storage unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from importlib import resources

SAMPLE_DATA = "co2_weekly.csv"
DEFAULT_ROOT = "artifacts"


def sample_data_path() -> str:
    return str(resources.files("plateau_lstm") / "sample_data" / SAMPLE_DATA)


def build_parser() -> argparse.ArgumentParser:
    from plateau_lstm.config import (
        CheckpointConfig,
        MetricsConfig,
        ModelConfig,
        PlateauConfig,
        PrepareConfig,
        ScheduleConfig,
        TrainConfig,
    )

    parser = argparse.ArgumentParser(
        prog="plateau-lstm",
        description="Train a residual LSTM forecaster that breaks out of loss plateaus.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--result-file",
        metavar="PATH",
        help="also write the JSON result printed on stdout to this local file, e.g. "
        "/airflow/xcom/return.json for KubernetesPodOperator's XCom sidecar",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )

    p, t, m, s, pl = (
        PrepareConfig(),
        TrainConfig(),
        ModelConfig(),
        ScheduleConfig(),
        PlateauConfig(),
    )

    prep = command(
        "prepare",
        "Validate and clean a raw CSV/Parquet series, split it in time, "
        "scale it on the training part, and write the prepared data set.",
    )
    prep.add_argument(
        "--input",
        default=sample_data_path(),
        help="raw CSV or Parquet file: local path, file:// or s3:// URI "
        "(default: the bundled weekly CO2 series)",
    )
    prep.add_argument(
        "--output", default=f"{DEFAULT_ROOT}/prepared", help="where the prepared set goes"
    )
    prep.add_argument(
        "--timestamp-col",
        default=p.timestamp_col,
        help="timestamp column (default: the first named date/time/timestamp/ds)",
    )
    prep.add_argument(
        "--target-col",
        default=p.target_col,
        help="column to forecast (default: the first numeric column)",
    )
    prep.add_argument("--feature-cols", default="", help="extra input columns, comma separated")
    prep.add_argument(
        "--train-fraction",
        type=float,
        default=p.train_fraction,
        help="oldest share of rows used to train (and to fit the scaler)",
    )
    prep.add_argument(
        "--val-fraction",
        type=float,
        default=p.val_fraction,
        help="next share, for validation; the newest rest is the test part",
    )
    prep.add_argument(
        "--max-gap", type=int, default=p.max_gap, help="longest run of missing steps to interpolate"
    )
    prep.add_argument(
        "--on-duplicate",
        choices=("error", "last", "mean"),
        default=p.on_duplicate,
        help="what to do with duplicate timestamps",
    )
    prep.add_argument(
        "--freq",
        default=p.freq,
        help="resample to this pandas frequency, e.g. h or 15min (default: inferred)",
    )
    prep.add_argument(
        "--window", type=int, default=t.window, help="input steps per window (for the size check)"
    )
    prep.add_argument(
        "--horizon",
        type=int,
        default=t.horizon,
        help="steps ahead to forecast (for the size check)",
    )

    tr = command("train", "Train the residual LSTM with the plateau-breaking callbacks.")
    tr.add_argument("--prepared", default=f"{DEFAULT_ROOT}/prepared", help="prepared data set URI")
    tr.add_argument(
        "--output", default=f"{DEFAULT_ROOT}/model", help="where the model and its report go"
    )
    tr.add_argument("--epochs", type=int, default=t.epochs, help="passes over the training windows")
    tr.add_argument(
        "--batch-size", type=int, default=t.batch_size, help="windows per step and replica"
    )
    tr.add_argument("--window", type=int, default=t.window, help="input steps per window")
    tr.add_argument("--horizon", type=int, default=t.horizon, help="steps ahead to forecast")
    tr.add_argument("--seed", type=int, default=t.seed, help="seed for weights and shuffling")
    tr.add_argument("--lstm-layers", type=int, default=m.lstm_layers, help="stacked LSTM blocks")
    tr.add_argument("--lstm-units", type=int, default=m.lstm_units, help="width of each LSTM")
    tr.add_argument(
        "--dense-layers",
        type=int,
        default=m.dense_layers,
        help="Swish dense blocks after the LSTMs",
    )
    tr.add_argument(
        "--dense-units", type=int, default=m.dense_units, help="width of each dense block"
    )
    tr.add_argument("--dropout", type=float, default=m.dropout, help="dropout after each block")
    tr.add_argument(
        "--no-forecast-change",
        action="store_true",
        help="predict the level directly instead of the change from the last value",
    )
    tr.add_argument("--base-lr", type=float, default=s.base_lr, help="lowest rate of the cycle")
    tr.add_argument("--max-lr", type=float, default=s.max_lr, help="first peak of the cycle")
    tr.add_argument(
        "--half-cycle-epochs",
        type=float,
        default=s.half_cycle_epochs,
        help="epochs from the bottom of a cycle to its peak",
    )
    tr.add_argument(
        "--boost-factor",
        type=float,
        default=s.boost_factor,
        help="peak multiplier after each plateau restart",
    )
    tr.add_argument(
        "--boost-cap",
        type=float,
        default=s.boost_cap,
        help="largest peak, as a multiple of --max-lr",
    )
    tr.add_argument(
        "--min-delta",
        type=float,
        default=pl.min_delta,
        help="smallest fall of validation MSE that counts as improvement",
    )
    tr.add_argument(
        "--patience",
        default=",".join(map(str, pl.patience)),
        help="epochs without improvement for the watch,act,severe plateau levels",
    )
    tr.add_argument(
        "--max-nan-recoveries",
        type=int,
        default=pl.max_nan_recoveries,
        help="NaN recoveries before the run stops",
    )
    tr.add_argument(
        "--distribution",
        choices=("auto", "none", "mirrored", "multi-worker"),
        default="auto",
        help="auto: multi-worker when TF_CONFIG names several workers, mirrored on several GPUs, "
        "else none; mirrored: every GPU of this machine; multi-worker: the workers of TF_CONFIG",
    )
    tr.add_argument(
        "--lr-scaling",
        choices=("sqrt", "linear", "none"),
        default=t.lr_scaling,
        help="how --base-lr and --max-lr follow the global batch (batch size x replicas)",
    )
    tr.add_argument(
        "--mixed-precision",
        action="store_true",
        help="float16 compute, float32 weights, dynamic loss scaling (for GPUs)",
    )
    ck = CheckpointConfig()
    tr.add_argument(
        "--keep-checkpoints",
        type=int,
        default=ck.keep_last,
        help="committed checkpoints kept in <output>/checkpoints besides the best one",
    )
    tr.add_argument(
        "--storage-wait",
        type=float,
        default=ck.storage_wait_seconds,
        help="seconds the end of the run waits for unreachable storage before it fails",
    )
    tr.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras verbosity (default: progress bar on a terminal, a line per epoch otherwise)",
    )
    mx = MetricsConfig()
    tr.add_argument(
        "--metrics-port",
        type=int,
        # A string default goes through `type`, so a bad variable is a clean usage error.
        default=os.environ.get("PLATEAU_LSTM_METRICS_PORT", str(mx.port)),
        help="port serving Prometheus /metrics while training runs, 0 turns it off; "
        "$PLATEAU_LSTM_METRICS_PORT sets the default",
    )
    tr.add_argument("--metrics-addr", default=mx.addr, help="address the /metrics endpoint binds")
    tr.add_argument(
        "--pushgateway",
        default=os.environ.get("PUSHGATEWAY_URL") or None,
        metavar="URL",
        help="Pushgateway to push the metrics to at every epoch end and at the end; "
        "$PUSHGATEWAY_URL sets the default, none pushes nothing",
    )
    tr.add_argument(
        "--model-name",
        default=mx.model_name,
        help="the model's name: the Pushgateway grouping key, one group per model (not per run)",
    )

    ev = command("evaluate", "Write metrics.json: test errors against persistence and the mean.")
    ev.add_argument("--prepared", default=f"{DEFAULT_ROOT}/prepared", help="prepared data set URI")
    ev.add_argument(
        "--model", default=f"{DEFAULT_ROOT}/model", help="train output folder or its model.keras"
    )
    ev.add_argument("--output", default=f"{DEFAULT_ROOT}/eval", help="where metrics.json goes")

    pr = command("promote", "Make the candidate the champion only if it is better.")
    pr.add_argument("--candidate", default=f"{DEFAULT_ROOT}/eval", help="evaluate output folder")
    pr.add_argument("--registry", default=DEFAULT_ROOT, help="root that holds champion.json")
    pr.add_argument(
        "--margin",
        type=float,
        default=0.01,
        help="relative test-MSE improvement over the champion required",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    from plateau_lstm.errors import TrainingFailed, UserError
    from plateau_lstm.storage import StorageError
    from plateau_lstm.tf_runtime import import_tensorflow_quietly

    try:
        if args.command in ("train", "evaluate"):
            gpus = import_tensorflow_quietly()
            logging.getLogger("plateau_lstm").info(
                "%s: TensorFlow on %s", args.command, f"{len(gpus)} GPU(s)" if gpus else "CPU"
            )
        result = _run(args)
    except (UserError, ValueError) as err:
        print(f"plateau-lstm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (TrainingFailed, StorageError) as err:
        print(f"plateau-lstm {args.command}: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"plateau-lstm {args.command}: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, sort_keys=True))
    if args.result_file:
        try:
            _write_result_file(args.result_file, result)
        except OSError as err:
            print(f"plateau-lstm {args.command}: failed: --result-file: {err}", file=sys.stderr)
            return 1
    return 0


def _write_result_file(path: str, result: dict) -> None:
    """Write whole or not at all: a reader (the XCom sidecar) never sees half a result."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".result-", dir=folder)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(result, out, sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _run(args) -> dict:
    from plateau_lstm import config as cfg

    if args.command == "prepare":
        from plateau_lstm.prepare import prepare

        features = tuple(c.strip() for c in args.feature_cols.split(",") if c.strip())
        config = cfg.PrepareConfig(
            timestamp_col=args.timestamp_col,
            target_col=args.target_col,
            feature_cols=features,
            train_fraction=args.train_fraction,
            val_fraction=args.val_fraction,
            max_gap=args.max_gap,
            on_duplicate=args.on_duplicate,
            freq=args.freq,
        )
        manifest = prepare(args.input, args.output, config, args.window, args.horizon)
        return {"output": args.output, "rows": manifest["rows"], "columns": manifest["columns"]}
    if args.command == "train":
        from plateau_lstm.train import train

        summary = train(
            args.prepared,
            args.output,
            _train_config(args),
            verbose=args.verbose,
            checkpointing=cfg.CheckpointConfig(
                keep_last=args.keep_checkpoints, storage_wait_seconds=args.storage_wait
            ),
            metrics=cfg.MetricsConfig(
                port=args.metrics_port,
                addr=args.metrics_addr,
                pushgateway=args.pushgateway,
                model_name=args.model_name,
            ),
            distribution=args.distribution,
        )
        return {
            "output": args.output,
            **{
                k: summary[k]
                for k in (
                    "epochs_run",
                    "val_mse_best",
                    "lr_restarts",
                    "loss_switches",
                    "plateaus_detected",
                    "replicas",
                )
            },
            "resumed_from_epoch": summary.get("resumed_from_epoch"),
        }
    if args.command == "evaluate":
        from plateau_lstm.evaluate import evaluate

        metrics = evaluate(args.prepared, args.model, args.output)
        return {
            "output": args.output,
            **{k: metrics[k] for k in ("test_mse", "persistence_mse", "skill_vs_persistence")},
        }
    from plateau_lstm.promote import promote

    outcome = promote(args.candidate, args.registry, margin=args.margin)
    return {"promoted": outcome["promoted"], "reason": outcome["reason"]}


def _train_config(args):
    from plateau_lstm import config as cfg

    try:
        watch, act, severe = (int(x) for x in args.patience.split(","))
    except ValueError:
        raise ValueError(
            f"--patience takes three comma-separated integers (watch,act,severe). "
            f"Received: {args.patience!r}"
        ) from None
    if not 0 < watch < act < severe:
        raise ValueError(f"--patience needs 0 < watch < act < severe. Received: {args.patience!r}")
    return cfg.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        window=args.window,
        horizon=args.horizon,
        seed=args.seed,
        lr_scaling=args.lr_scaling,
        mixed_precision=args.mixed_precision,
        model=cfg.ModelConfig(
            lstm_layers=args.lstm_layers,
            lstm_units=args.lstm_units,
            dense_layers=args.dense_layers,
            dense_units=args.dense_units,
            dropout=args.dropout,
            forecast_change=not args.no_forecast_change,
        ),
        schedule=cfg.ScheduleConfig(
            base_lr=args.base_lr,
            max_lr=args.max_lr,
            half_cycle_epochs=args.half_cycle_epochs,
            boost_factor=args.boost_factor,
            boost_cap=args.boost_cap,
        ),
        plateau=cfg.PlateauConfig(
            min_delta=args.min_delta,
            patience_watch=watch,
            patience_act=act,
            patience_severe=severe,
            max_nan_recoveries=args.max_nan_recoveries,
        ),
    )


def _version() -> str:
    from plateau_lstm import __version__

    return f"plateau-lstm {__version__}"


if __name__ == "__main__":
    sys.exit(main())
