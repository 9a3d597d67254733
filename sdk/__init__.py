"""algomesh: pipe machine-learning models together like Unix programs.

    import algomesh
    client = algomesh.client("API_KEY")
    clean = client.algo("demo/clean")
    score = client.algo("demo/sentiment/1.*")
    print(score.pipe(clean.pipe("what a lovely day!")).result)
"""
from ._client import (
    Algorithm,
    AsyncAlgorithm,
    AsyncClient,
    AsyncResponse,
    Client,
    Metadata,
    Response,
    async_client,
    client,
)
from ._compose import AsyncPipeline, Pipeline
from ._errors import (
    AlgomeshError,
    AlgorithmError,
    DeadlineExceededError,
    InternalError,
    InvalidError,
    LimitError,
    NotFoundError,
    PermissionError_,
    PipelineError,
    RunnerCrashedError,
    UnavailableError,
    VersionExistsError,
)
from ._data import DataFile, DataInfo
from ._payload import Payload
from ._stream import AsyncStreamResponse, Stream, StreamResponse

__version__ = "0.1.0"

__all__ = [
    "client", "async_client", "Client", "AsyncClient", "Algorithm", "AsyncAlgorithm",
    "Response", "AsyncResponse", "Metadata", "Payload", "Pipeline", "AsyncPipeline",
    "Stream", "StreamResponse", "AsyncStreamResponse", "DataFile", "DataInfo",
    "AlgomeshError", "AlgorithmError", "DeadlineExceededError", "InternalError", "InvalidError",
    "LimitError", "NotFoundError", "PermissionError_", "PipelineError", "RunnerCrashedError", "UnavailableError",
    "VersionExistsError",
]
