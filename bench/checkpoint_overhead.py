"""What checkpointing to S3 costs: epoch time (goal <= 1.05) and upload throughput (goal >= 0.8).

1. Epoch time with a Checkpointer writing every epoch to a real SeaweedFS / the same fit without.
   Two identical compiled models with the plateau callbacks are fitted in turn, A B A B ..., so
   both see the same machine load; an epoch is the wall time between consecutive epoch ends,
   measured by a callback placed after every other one (so the checkpoint capture is inside it).
   The figure is the median of the per-round ratios of the median epoch.
2. Upload throughput of a checkpoint folder through the background uploader (CheckpointStore
   .publish: body files concurrently, COMMITTED last) / boto3's `upload_file` of the same files,
   one after the other, to the same server, alternated the same way. Median bytes per second.

SeaweedFS is started on loopback ports the way the tests start it (tests/conftest.py).

    .venv/bin/python bench/checkpoint_overhead.py --rounds 5 --epochs 5 --upload-mib 64
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import compiled_model, plateau_callbacks  # noqa: E402

from plateau_lstm.background_uploader import BackgroundUploader, UploadJob  # noqa: E402
from plateau_lstm.checkpoints import CheckpointStore, write_manifest  # noqa: E402
from plateau_lstm.cli import sample_data_path  # noqa: E402
from plateau_lstm.config import PrepareConfig, TrainConfig  # noqa: E402
from plateau_lstm.prepare import prepare  # noqa: E402
from plateau_lstm.prepared import load_prepared  # noqa: E402
from plateau_lstm.storage import open_store  # noqa: E402
from plateau_lstm.windows import change_scales, make_dataset, window_count  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import SeaweedFS  # noqa: E402


def start_seaweedfs(workdir: str) -> tuple[SeaweedFS, str]:
    """A SeaweedFS server, AWS_* variables pointing at it, and a fresh bucket URI."""
    server = SeaweedFS(Path(workdir) / "seaweedfs")
    server.start()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": server.endpoint,
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return server, f"s3://{bucket}"


def epoch_timer():
    """A callback keeping the wall time of every epoch end, put after all the others."""
    import keras

    class EpochEnds(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: list[float] = []
            self.cpu: list[float] = []  # this process, all threads: training and uploads

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu.append(usage.ru_utime + usage.ru_stime)

    return EpochEnds()


def fit_once(prepared, config, *, checkpoint_uri: str | None, scratch: str) -> dict:
    """One fit with the plateau callbacks (and a Checkpointer when `checkpoint_uri` is set)."""
    from plateau_lstm.callbacks.checkpointer import Checkpointer
    from plateau_lstm.training_state import EventLogState

    scales = change_scales(prepared.values, *prepared.bounds["train"], config.horizon)
    windows = window_count(*prepared.bounds["train"], config.window, config.horizon)
    steps = math.ceil(windows / config.batch_size)

    def dataset(split, shuffle):
        start, end = prepared.bounds[split]
        return make_dataset(
            prepared.values,
            start,
            end,
            window=config.window,
            horizon=config.horizon,
            batch_size=config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
            change_scale=float(scales[0]),
        )

    model, schedule, loss = compiled_model(prepared, config, steps)
    plateau = plateau_callbacks(
        schedule, loss, os.path.join(scratch, f"events-{uuid.uuid4().hex}.jsonl")
    )
    callbacks = list(plateau.values())
    uploader = None
    if checkpoint_uri is not None:
        uploader = BackgroundUploader()
        events = plateau["nan_guard"].event_log
        stateful = {**plateau, "events": EventLogState(events)}
        callbacks.append(
            Checkpointer(
                CheckpointStore(open_store(checkpoint_uri)),
                uploader,
                os.path.join(scratch, f"staging-{uuid.uuid4().hex}"),
                stateful=stateful,
            )
        )
    timer = epoch_timer()
    model.fit(
        dataset("train", True).repeat(),
        steps_per_epoch=steps,
        validation_data=dataset("val", False),
        epochs=config.epochs,
        verbose=0,
        callbacks=[*callbacks, timer],
    )
    result = {
        "epochs": [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)],
        "cpu": [b - a for a, b in zip(timer.cpu, timer.cpu[1:], strict=False)],
    }
    if uploader is not None:
        uploader.wait(timeout=600)
        uploader.close()
        result["uploads"] = [job.seconds for job in uploader.completed]
    return result


def make_checkpoint_folder(root: str, mib: int) -> tuple[Path, int]:
    """A checkpoint folder shaped like a big model's: one large weights file, small JSON."""
    folder = Path(root) / f"upload-{mib}mib"
    folder.mkdir()
    (folder / "model.weights.h5").write_bytes(os.urandom(mib * 1024 * 1024))
    (folder / "random.json").write_text('{"python": [], "numpy": []}\n' * 200)
    (folder / "state.json").write_text('{"epoch": 1}\n')
    write_manifest(folder, epoch=1, monitor="val_mse", value=0.5)
    size = sum(path.stat().st_size for path in folder.iterdir())
    return folder, size


def upload_rounds(server, bucket_uri: str, folder: Path, rounds: int) -> tuple[list, list]:
    """Seconds per upload of `folder`: ours (uploader + publish) and boto3 upload_file, A B A B."""
    bucket = bucket_uri.removeprefix("s3://")
    client = server.client(retries={"mode": "standard", "max_attempts": 5})
    ours, boto = [], []
    with BackgroundUploader() as uploader:

        def upload_ours(index: int) -> float:
            checkpoints = CheckpointStore(open_store(f"{bucket_uri}/runs/ours-{index}/model"))
            started = time.perf_counter()
            uploader.submit(UploadJob("bench", lambda: checkpoints.publish(folder)))
            uploader.wait(timeout=600)
            return time.perf_counter() - started

        def upload_boto(index: int) -> float:
            started = time.perf_counter()
            for path in sorted(folder.iterdir()):
                client.upload_file(str(path), bucket, f"runs/boto-{index}/{path.name}")
            return time.perf_counter() - started

        for index in range(rounds + 1):  # the first round warms connections up and is dropped
            # A B, then B A: neither side always runs second, on a warmer server.
            if index % 2:
                boto_s, ours_s = upload_boto(index), upload_ours(index)
            else:
                ours_s, boto_s = upload_ours(index), upload_boto(index)
            if index:
                ours.append(ours_s)
                boto.append(boto_s)
    return ours, boto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds of each measurement")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (first not timed)")
    parser.add_argument("--upload-mib", type=int, default=64, help="weights file size to upload")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as scratch:
        server, bucket_uri = start_seaweedfs(scratch)
        try:
            prepared_path = os.path.join(scratch, "prepared")
            prepare(sample_data_path(), prepared_path, PrepareConfig(), 48, 1)
            prepared = load_prepared(open_store(prepared_path))
            config = TrainConfig(epochs=args.epochs)

            ratios, plain_all, ckpt_all, uploads, plain_cpu, ckpt_cpu = [], [], [], [], [], []
            for index in range(args.rounds):
                plain = fit_once(prepared, config, checkpoint_uri=None, scratch=scratch)
                uri = f"{bucket_uri}/runs/round-{index}/model"
                ckpt = fit_once(prepared, config, checkpoint_uri=uri, scratch=scratch)
                plain_median = statistics.median(plain["epochs"])
                ckpt_median = statistics.median(ckpt["epochs"])
                ratios.append(ckpt_median / plain_median)
                plain_all += plain["epochs"]
                ckpt_all += ckpt["epochs"]
                uploads += ckpt["uploads"]
                plain_cpu += plain["cpu"]
                ckpt_cpu += ckpt["cpu"]
                print(
                    f"round {index}: epoch {plain_median * 1e3:.0f} ms without, "
                    f"{ckpt_median * 1e3:.0f} ms with S3 checkpoints, ratio {ratios[-1]:.3f}",
                    flush=True,
                )

            folder, size = make_checkpoint_folder(scratch, args.upload_mib)
            ours, boto = upload_rounds(server, bucket_uri, folder, args.rounds)
        finally:
            server.close()

    mib = size / 2**20
    ours_rate = mib / statistics.median(ours)
    boto_rate = mib / statistics.median(boto)
    print()
    print(f"model: TrainConfig() defaults, {args.epochs} epochs, {args.rounds} A/B rounds")
    print(
        f"epoch time  median without {statistics.median(plain_all) * 1e3:.0f} ms, with S3 "
        f"checkpoints {statistics.median(ckpt_all) * 1e3:.0f} ms; median per-round ratio "
        f"{statistics.median(ratios):.3f} (goal <= 1.05)"
    )
    cpu_without, cpu_with = statistics.median(plain_cpu), statistics.median(ckpt_cpu)
    print(
        f"CPU time per epoch (this process, all threads) median without "
        f"{cpu_without * 1e3:.0f} ms, with {cpu_with * 1e3:.0f} ms"
    )
    upload_s = statistics.median(uploads)
    print(f"checkpoint upload (in the background, outside the epoch) median {upload_s:.3f} s")
    ours_s, boto_s = statistics.median(ours), statistics.median(boto)
    print(
        f"upload of {mib:.1f} MiB: ours {ours_rate:.0f} MiB/s (median {ours_s:.3f} s), "
        f"boto3 upload_file {boto_rate:.0f} MiB/s (median {boto_s:.3f} s); "
        f"ratio {ours_rate / boto_rate:.2f} (goal >= 0.8)"
    )


if __name__ == "__main__":
    main()
