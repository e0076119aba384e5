"""reproduce.json (kitctl/core/pipeline_state.py): typed, atomic, and the rows `kitctl status` shows from it."""
from __future__ import annotations

import os
import socket

from kitctl.core.pipeline_state import FILENAME, STAGES, PipelineState, read_pipeline_state, status_rows


def test_record_round_trip_and_current_stage(tmp_path):
    st = PipelineState(preset="gpt2-124m", run_dir=str(tmp_path), key={"steps": 12})
    assert [s.name for s in st.stages] == list(STAGES) and st.current().name == "preflight"
    for name in ("preflight", "build"):
        st.stage(name).status = "done"
    st.stage("data").status, st.stage("data").progress, st.stage("data").progress_text = "running", 0.25, "shard 3"
    st.pid, st.host = os.getpid(), socket.gethostname()
    st.write(tmp_path / FILENAME)
    assert not [p for p in tmp_path.iterdir() if p.name != FILENAME]        # no temp file left beside it
    back = read_pipeline_state(tmp_path)
    assert back.current().name == "data" and back.stage("data").progress == 0.25 and back.key == {"steps": 12}
    rows = dict(status_rows(tmp_path))
    # the recorded pid is this test process, not a kitctl: not alive as far as the record is concerned
    assert rows["reproduce"].startswith("stage 3/7 data: running 25% (shard 3)")
    assert "preflight done, build done, data running 25%" in rows["stages"]


def test_no_record_no_rows_and_a_damaged_one_says_so(tmp_path):
    assert status_rows(tmp_path) == [] and read_pipeline_state(tmp_path) is None
    (tmp_path / FILENAME).write_text("{not json")
    (label, value), = status_rows(tmp_path)
    assert label == "reproduce" and "unreadable" in value and "not a readable" in value
    (tmp_path / FILENAME).write_text('{"schema_version": 99, "preset": "x", "run_dir": "."}')
    assert "newer kitctl" in status_rows(tmp_path)[0][1]
