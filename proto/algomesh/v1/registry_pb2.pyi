from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Manifest(_message.Message):
    __slots__ = ("name", "version", "runtime", "entrypoint", "description", "permissions", "deterministic", "scaling", "build", "isolation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    runtime: str
    entrypoint: str
    description: str
    permissions: Permissions
    deterministic: bool
    scaling: Scaling
    build: str
    isolation: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., runtime: _Optional[str] = ..., entrypoint: _Optional[str] = ..., description: _Optional[str] = ..., permissions: _Optional[_Union[Permissions, _Mapping]] = ..., deterministic: _Optional[bool] = ..., scaling: _Optional[_Union[Scaling, _Mapping]] = ..., build: _Optional[str] = ..., isolation: _Optional[str] = ...) -> None: ...

class Permissions(_message.Message):
    __slots__ = ("can_call", "callability")
    CAN_CALL_FIELD_NUMBER: _ClassVar[int]
    CALLABILITY_FIELD_NUMBER: _ClassVar[int]
    can_call: _containers.RepeatedScalarFieldContainer[str]
    callability: str
    def __init__(self, can_call: _Optional[_Iterable[str]] = ..., callability: _Optional[str] = ...) -> None: ...

class Scaling(_message.Message):
    __slots__ = ("min_instances", "max_instances", "idle_seconds", "concurrency", "max_in_flight", "scale_up_in_flight")
    MIN_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    SCALE_UP_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    min_instances: int
    max_instances: int
    idle_seconds: int
    concurrency: int
    max_in_flight: int
    scale_up_in_flight: int
    def __init__(self, min_instances: _Optional[int] = ..., max_instances: _Optional[int] = ..., idle_seconds: _Optional[int] = ..., concurrency: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., scale_up_in_flight: _Optional[int] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("manifest", "digest", "published_at", "private")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    manifest: Manifest
    digest: str
    published_at: int
    private: bool
    def __init__(self, manifest: _Optional[_Union[Manifest, _Mapping]] = ..., digest: _Optional[str] = ..., published_at: _Optional[int] = ..., private: _Optional[bool] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("archive", "private")
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    archive: bytes
    private: bool
    def __init__(self, archive: _Optional[bytes] = ..., private: _Optional[bool] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("version", "created")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    version: VersionInfo
    created: bool
    def __init__(self, version: _Optional[_Union[VersionInfo, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("target", "requester")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    target: str
    requester: str
    def __init__(self, target: _Optional[str] = ..., requester: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: VersionInfo
    def __init__(self, version: _Optional[_Union[VersionInfo, _Mapping]] = ...) -> None: ...

class ListAlgorithmsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AlgorithmSummary(_message.Message):
    __slots__ = ("name", "latest_version", "version_count", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_version: str
    version_count: int
    description: str
    def __init__(self, name: _Optional[str] = ..., latest_version: _Optional[str] = ..., version_count: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class ListAlgorithmsResponse(_message.Message):
    __slots__ = ("algorithms",)
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    algorithms: _containers.RepeatedCompositeFieldContainer[AlgorithmSummary]
    def __init__(self, algorithms: _Optional[_Iterable[_Union[AlgorithmSummary, _Mapping]]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "algorithm", "version", "address", "state", "started_at", "metrics_address", "client_address")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    algorithm: str
    version: str
    address: str
    state: str
    started_at: int
    metrics_address: str
    client_address: str
    def __init__(self, id: _Optional[str] = ..., algorithm: _Optional[str] = ..., version: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., started_at: _Optional[int] = ..., metrics_address: _Optional[str] = ..., client_address: _Optional[str] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("algorithm",)
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    def __init__(self, algorithm: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("target", "requester")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    target: str
    requester: str
    def __init__(self, target: _Optional[str] = ..., requester: _Optional[str] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("version", "instances", "cold_start", "mesh_ca")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    MESH_CA_FIELD_NUMBER: _ClassVar[int]
    version: VersionInfo
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    cold_start: bool
    mesh_ca: str
    def __init__(self, version: _Optional[_Union[VersionInfo, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., cold_start: _Optional[bool] = ..., mesh_ca: _Optional[str] = ...) -> None: ...

class RegisterInstanceRequest(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ...) -> None: ...

class RegisterInstanceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeregisterInstanceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeregisterInstanceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("target", "instances")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    target: str
    instances: int
    def __init__(self, target: _Optional[str] = ..., instances: _Optional[int] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("version", "instances")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    version: VersionInfo
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    def __init__(self, version: _Optional[_Union[VersionInfo, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class View(_message.Message):
    __slots__ = ("revision", "versions", "instances", "stale", "keys")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    stale: str
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, revision: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., stale: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "owner", "algorithms", "no_pipelines", "data", "admin", "salt", "hash", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    NO_PIPELINES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    no_pipelines: bool
    data: str
    admin: bool
    salt: bytes
    hash: bytes
    created_at: int
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., no_pipelines: _Optional[bool] = ..., data: _Optional[str] = ..., admin: _Optional[bool] = ..., salt: _Optional[bytes] = ..., hash: _Optional[bytes] = ..., created_at: _Optional[int] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("owner", "algorithms", "no_pipelines", "data", "admin")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    NO_PIPELINES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    no_pipelines: bool
    data: str
    admin: bool
    def __init__(self, owner: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., no_pipelines: _Optional[bool] = ..., data: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    def __init__(self, owner: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IssueCertificateRequest(_message.Message):
    __slots__ = ("identity", "lifetime_seconds")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    identity: str
    lifetime_seconds: int
    def __init__(self, identity: _Optional[str] = ..., lifetime_seconds: _Optional[int] = ...) -> None: ...

class IssueCertificateResponse(_message.Message):
    __slots__ = ("ca", "cert", "key")
    CA_FIELD_NUMBER: _ClassVar[int]
    CERT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ca: str
    cert: str
    key: str
    def __init__(self, ca: _Optional[str] = ..., cert: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...
