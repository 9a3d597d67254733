import grpc
import pytest

import algomesh
from algomesh._errors import REASONS, STATUS_DETAILS_KEY, error, from_status, to_status


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_round_trips_through_a_status(reason):
    exc = error(reason, "something specific", stacktrace="Traceback ...\nValueError: x\n",
                algorithm="a/b", version="1.0.0")
    code, details, trailing = to_status(exc)
    assert code == REASONS[reason].code
    back = from_status(code, details, dict(trailing))
    assert type(back) is REASONS[reason].exception
    assert (back.reason, back.message, back.algorithm, back.version) == (reason, "something specific", "a/b", "1.0.0")
    assert back.stacktrace.endswith("ValueError: x\n")


def test_the_table_is_complete_and_hints_exist():
    for reason, r in REASONS.items():
        assert isinstance(r.code, grpc.StatusCode) and r.hint, reason
        assert issubclass(r.exception, algomesh.AlgomeshError)


def test_bare_status_maps_by_code():
    e = from_status(grpc.StatusCode.UNAVAILABLE, "connection refused", {})
    assert isinstance(e, algomesh.UnavailableError) and e.reason == "MESH_UNAVAILABLE"
    e = from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", {})
    assert isinstance(e, algomesh.DeadlineExceededError)


def test_garbage_status_details_do_not_crash():
    e = from_status(grpc.StatusCode.INTERNAL, "x", {STATUS_DETAILS_KEY: b"\xff\xff\xff"})
    assert isinstance(e, algomesh.InternalError)


def test_str_names_the_reason():
    assert str(error("VERSION_NOT_FOUND", "no 9.*")) == "VERSION_NOT_FOUND: no 9.*"


def test_docs_list_every_reason():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    missing = [r for r in REASONS if f"| `{r}` | {REASONS[r].code.name} |" not in doc]
    assert not missing, f"docs/contract.md lacks {missing}"
