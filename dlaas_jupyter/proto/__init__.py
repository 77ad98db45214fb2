"""The FfDL Trainer protocol (grpc.trainer.v2) and its generated stubs.

Regenerate the stubs with ``python scripts/generate_proto.py``.
"""

from dlaas_jupyter.proto import trainer_pb2, trainer_pb2_grpc

__all__ = ["trainer_pb2", "trainer_pb2_grpc"]
