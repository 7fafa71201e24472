"""TensorBoard event files read back with TensorBoard's own record reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EventRead:
    """Scalars of one run's event files: tag -> [(step, value)], and what went wrong."""

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    files: int = 0


def read_events(tb_dir: Path) -> EventRead:
    """Every scalar in the event files under ``tb_dir`` (the stages' runs ``tb/rm``, ``tb/ppo``
    ... and the HParams record in ``tb/`` itself), read with TensorBoard's record reader.

    A missing directory, no event file, or a truncated/corrupt record (a file cut short, or one
    still being written) is recorded in ``issues``; the records before it are kept.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    from tensorboard.util import tensor_util

    out = EventRead()
    files = sorted(Path(tb_dir).rglob("events.out.tfevents.*")) if Path(tb_dir).is_dir() else []
    out.files = len(files)
    if not files:
        out.issues.append(f"no event file in {tb_dir}")
        return out
    for f in files:
        reader = pywrap_tensorflow.PyRecordReader_New(str(f), 0, None, None)
        n = 0
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as e:
                what = "truncated" if "truncated" in str(e).lower() else "corrupt"
                out.issues.append(f"{what} event file {f.relative_to(tb_dir)} after {n} records")
                break
            n += 1
            try:
                event = event_pb2.Event.FromString(reader.record())
            except Exception:  # noqa: BLE001  (a record that is not an Event)
                out.issues.append(f"corrupt event file {f.relative_to(tb_dir)} at record {n}")
                break
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    value = float(v.simple_value)
                elif v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "scalars":
                    value = float(tensor_util.make_ndarray(v.tensor))
                else:
                    continue
                out.scalars.setdefault(v.tag, []).append((int(event.step), value))
        if n == 0 and not any(i.startswith(("truncated", "corrupt")) for i in out.issues):
            out.issues.append(f"empty event file {f.relative_to(tb_dir)}")
    for tag, points in out.scalars.items():
        # a resumed stage writes a second file in its run dir (names sort by time): keep the
        # last value logged for each step
        out.scalars[tag] = sorted(dict(points).items())
    return out
