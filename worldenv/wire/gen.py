"""Generate the Python gRPC stubs for protos/worldenv/v1 into worldenv/v1/.

Run as `python -m worldenv.wire.gen` (or `python worldenv/wire/gen.py`); the build runs it too.
Output lands in the package `worldenv.v1`, mirroring the proto package `worldenv.v1`, so the
generated imports (`from worldenv.v1 import tensor_pb2`) resolve without rewriting.
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "worldenv" / "v1"


def main() -> int:
    from grpc_tools import protoc  # build-time dependency only
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "worldenv" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_DIR / 'worldenv' / 'v1'}")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "__init__.py").write_text('"""Generated gRPC stubs for protos/worldenv/v1 (build product; do not edit)."""\n')
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={ROOT}",
            f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *protos]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    print(f"generated stubs for {len(protos)} protos in {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
