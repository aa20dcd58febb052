"""Search results as a pandas DataFrame (pandas is the optional extra ``traceduck[pandas]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .entities import Trace

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "trace_id", "trace", "client_request_id", "state", "request_time", "execution_duration",
    "request", "response", "trace_metadata", "tags", "spans", "assessments",
)  # fmt: skip


def require_pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "search_traces(return_type='pandas') needs pandas: pip install 'traceduck[pandas]' "
            "(or pass return_type='list' for Trace objects)"
        ) from None
    return pandas


def traces_to_dataframe(traces: list[Trace], include_spans: bool = True) -> pd.DataFrame:
    """One row per trace with the columns of MLflow's ``search_traces`` DataFrame."""
    pandas = require_pandas()
    rows = []
    for t in traces:
        info = t.info
        rows.append((
            info.trace_id,
            t,
            info.client_request_id,
            info.state,
            info.request_time,
            info.execution_duration,
            t.data.request if include_spans else info.request_preview,
            t.data.response if include_spans else info.response_preview,
            info.metadata,
            info.tags,
            [s.to_dict() for s in t.data.spans] if include_spans else [],
            [a.to_dict() for a in info.assessments],
        ))  # fmt: skip
    return pandas.DataFrame.from_records(rows, columns=list(COLUMNS))
