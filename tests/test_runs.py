"""Run folders: the typed run state."""
import json
import math

from mtlib.training.runs import RunState


def test_run_state_survives_its_json_round_trip():
    state = RunState(update=3, examples=96, best_score=0.5, history=[{"update": 3, "mean": 0.5}])
    again = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert RunState.from_json(json.loads(json.dumps(RunState().to_json()))).best_score == -math.inf
