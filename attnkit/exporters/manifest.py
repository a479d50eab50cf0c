"""manifest.json, artifact hashing and atomic writes of a whole export directory."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.errors import ArtifactError, ExportError
from ..core.genspec import GenerationSpec
from ..core.interrupts import check as check_interrupt
from ..core.names import GENERATION_ROLES, MANIFEST, ROLE_MODEL
from ..core.spec import ExportSpec

_VERSIONED = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


def library_versions(packages: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """Installed versions, read from package metadata (imports nothing heavy)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory's relative paths and contents in sorted order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_path(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class ArtifactRecord:
    """One exported artifact: where it is, what precision, its size and hash, its agreement."""

    format: str  # keras | savedmodel | onnx | openvino | tensorrt
    path: str  # relative to the export directory
    precision: str
    bytes: int = 0
    sha256: str = ""
    agreement: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    role: str = ROLE_MODEL  # attnkit.core.names: model, signatures, decoder_with_past, encoder

    @classmethod
    def of(cls, root: Path, fmt: str, rel: str, precision: str, role: str = ROLE_MODEL, **extra: Any) -> ArtifactRecord:
        p = root / rel
        return cls(fmt, rel, precision, size_path(p), sha256_path(p), extra=extra, role=role)


@dataclass
class GenerationSection:
    """The manifest's ``generation`` section (``export --generate``): the decode step's interface, its
    artifacts (each with its role), the sampler the in-graph ``generate`` was traced with, and the
    agreement measured at export."""

    spec: GenerationSpec
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    sampler: str = "greedy"
    generate_inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)

    def artifact(self, role: str, fmt: str, precision: str = "fp32") -> ArtifactRecord | None:
        return next(
            (a for a in self.artifacts if a.role == role and a.format == fmt and a.precision == precision), None
        )

    def has(self, fmt: str) -> bool:
        return any(a.format == fmt for a in self.artifacts)

    def replace(self, record: ArtifactRecord) -> None:
        """Add ``record``, dropping an older one at the same path."""
        self.artifacts = [a for a in self.artifacts if a.path != record.path] + [record]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationSection:
        records = [ArtifactRecord(**a) for a in d.get("artifacts", [])]
        bad = sorted({a.role for a in records} - set(GENERATION_ROLES))
        if bad:
            raise ArtifactError(f"the manifest's generation section has unknown roles {bad}.", flag="DIR")
        return cls(
            spec=GenerationSpec.from_dict(d["spec"]),
            artifacts=records,
            sampler=d.get("sampler", "greedy"),
            generate_inputs=d.get("generate_inputs", []),
            notes=d.get("notes", []),
            agreement=d.get("agreement", {}),
        )


@dataclass
class Manifest:
    """Everything an export directory holds, as written to ``manifest.json``."""

    model: dict[str, Any]
    spec: ExportSpec
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    attnkit: str = __version__
    notes: list[str] = field(default_factory=list)  # what was asked for and not produced, and why
    target: dict[str, Any] = field(default_factory=dict)  # export --target: CPU class, int8 scheme and why
    machine: dict[str, Any] = field(default_factory=dict)  # the export machine: CPU, class, features
    generation: GenerationSection | None = None  # export --generate
    #: `attnkit run`'s deployment pick on the machine it measured (latency and throughput; see BenchReport.pick)
    pick: dict[str, Any] = field(default_factory=dict)
    #: export --data: the user's data (path, sha256, rows, the calibration/held-out split), as calibrated and checked
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attnkit": self.attnkit,
            "created": self.created,
            "model": self.model,
            "spec": self.spec.to_dict(),
            "artifacts": [asdict(a) for a in self.artifacts],
            "versions": self.versions,
            "notes": self.notes,
            "target": self.target,
            "machine": self.machine,
            **({"generation": self.generation.to_dict()} if self.generation else {}),
            **({"pick": self.pick} if self.pick else {}),
            **({"data": self.data} if self.data else {}),
        }

    def write(self, root: Path) -> None:
        write_text_atomic(Path(root) / MANIFEST, json.dumps(self.to_dict(), indent=2), flag="DIR")

    def all_artifacts(self) -> list[ArtifactRecord]:
        """The forward artifacts, then the generation section's (a path shared by both listed once)."""
        paths = {a.path for a in self.artifacts}
        return self.artifacts + [
            a for a in (self.generation.artifacts if self.generation else []) if a.path not in paths
        ]

    def artifact(self, fmt: str, precision: str | None = None) -> ArtifactRecord | None:
        for a in self.artifacts:
            if a.format == fmt and (precision is None or a.precision == precision):
                return a
        return None

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        """Read ``DIR/manifest.json``.

        Raises:
            ArtifactError: DIR or its manifest is missing or unreadable.
        """
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise ArtifactError(
                f"`{root}` has no {MANIFEST}; it is not an attnkit export directory.",
                flag="DIR",
                hint="Create one with: attnkit export MODEL --out DIR",
            )
        try:
            d = json.loads(path.read_text())
            return cls(
                model=d["model"],
                spec=ExportSpec.from_dict(d["spec"]),
                artifacts=[ArtifactRecord(**a) for a in d["artifacts"]],
                versions=d.get("versions", {}),
                created=d.get("created", ""),
                attnkit=d.get("attnkit", ""),
                notes=d.get("notes", []),
                target=d.get("target", {}),
                machine=d.get("machine", {}),
                generation=GenerationSection.from_dict(d["generation"]) if d.get("generation") else None,
                pick=d.get("pick", {}),
                data=d.get("data", {}),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"`{path}` is not a valid manifest ({type(e).__name__}: {e}).", flag="DIR") from None

    def check_integrity(self, root: str | Path) -> list[str]:
        """One message per artifact that is missing or whose sha256 differs from the manifest."""
        problems = []
        for a in {a.path: a for a in self.all_artifacts()}.values():  # a path two precisions share: once
            p = Path(root) / a.path
            if not p.exists():
                problems.append(f"{a.path}: missing")
            elif (digest := sha256_path(p)) != a.sha256:
                problems.append(f"{a.path}: sha256 {digest[:12]}… does not match the manifest's {a.sha256[:12]}…")
        return problems

    def require_integrity(self, root: str | Path) -> None:
        """Raise ArtifactError naming every missing or tampered artifact."""
        problems = self.check_integrity(root)
        if problems:
            raise ArtifactError(
                f"`{root}` does not match its manifest: {'; '.join(problems)}.",
                flag="DIR",
                hint="Re-export with: attnkit export MODEL --out DIR --force",
            )


def check_writable_out(out: Path, force: bool, flag: str = "--out") -> None:
    """Refuse an existing non-empty ``out`` without ``force`` and an unwritable parent, before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"`{out}` exists and is not a directory.", flag=flag, hint="Choose another path.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(
            f"`{out}` exists and is not empty.", flag=flag, hint="Pass --force to replace it, or choose another --out."
        )
    _check_parent_writable(out, flag)


def check_writable_file(path: Path, flag: str) -> None:
    """Refuse a directory, or a path whose nearest existing ancestor cannot be written, before any work."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"`{path}` is a directory; a file path is expected.", flag=flag)
    _check_parent_writable(path, flag)


def _check_parent_writable(path: Path, flag: str) -> None:
    """Refuse a path whose nearest existing ancestor cannot be written (a directory name may hold a dot)."""
    parent = Path(path).resolve().parent
    while not parent.exists():
        parent = parent.parent
    try:  # a real probe: os.access() says yes to root even where writes fail (/proc, read-only mounts)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ExportError(
            f"cannot write under `{parent}` ({e.strerror or e}).", flag=flag, hint="Choose a writable directory."
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable_dir(root: str | Path) -> None:
    """Give a staged tree the modes the user's umask gives any new file (0755/0644 under umask 022).

    ``tempfile.mkdtemp``/``mkstemp`` create 0700/0600, which a Triton or TF Serving container running
    as another user cannot read; the rename into place keeps whatever mode the stage had.
    """
    mask = _umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o777 & ~mask)
        elif path.stat().st_nlink == 1:  # hard links share the export's inode: leave its mode alone
            path.chmod((0o777 if os.access(path, os.X_OK) and path.stat().st_mode & 0o100 else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_directory(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging directory beside ``out``; on success swap it into place, else delete it.

    An existing ``out`` is only replaced after the new one is complete (``force`` required), so a
    failed or interrupted export leaves neither a half-written directory nor a damaged old one.
    """
    out = Path(out)
    check_writable_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield staging
        check_interrupt()  # never move a staged export into place after a SIGTERM (see attnkit.core.interrupts)
        readable_dir(staging)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if _disk_full(e):
            raise ExportError(
                f"no space left on the device of `{out.parent}`; nothing was written.",
                flag="--out",
                hint="Free space, or choose an --out on another disk.",
            ) from None
        raise


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, or TensorFlow's/protobuf's wrapping of it (ResourceExhaustedError, 'No space left')."""
    import errno

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def write_text_atomic(path: str | Path, text: str, flag: str = "--out") -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise ExportError(
            f"cannot write `{path}` ({e.strerror or e}).", flag=flag, hint="Choose a writable path."
        ) from None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write binary data through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(out: str | Path, writers: dict[str, Any], flag: str = "--out") -> list[Path]:
    """The one writer of a command's result files (bench, bench-generate, loadtest): every file is complete in
    a staging directory (a full disk fails there) before any replaces an old one; a directory this call
    created is removed again when anything fails, so a failed ``--out`` leaves nothing behind.

    Args:
        writers: file name -> ``fn(path)`` writing that file.
    """
    out = Path(out)
    created = not out.exists()
    stage = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".out.tmp-", dir=out))
        for name, write in writers.items():
            write(stage / name)
        readable_dir(stage)
        for name in writers:
            os.replace(stage / name, out / name)
    except BaseException as e:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
            stage = None
        if created:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, OSError) or _disk_full(e):
            raise ExportError(
                f"cannot write into `{out}` ({getattr(e, 'strerror', None) or e}); nothing was left there.",
                flag=flag,
            ) from None
        raise
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in writers]
