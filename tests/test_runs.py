"""Run folders: the typed run state."""
import dataclasses
import json
import math

from mtlib.training.runs import RunState


def test_run_state_survives_its_json_round_trip():
    state = RunState(update=3, examples=96, best_score=0.5, history=[{"update": 3, "mean": 0.5}])
    again = RunState(**json.loads(json.dumps(dataclasses.asdict(state))))
    assert again == state
    assert RunState(**json.loads(json.dumps(dataclasses.asdict(RunState())))).best_score == -math.inf
