"""python3 -m torchworker --model PATH --listen SOCKET [options]

Loads the model, listens on a Unix socket, serves one learner connection and
exits when it closes (or on the "shutdown" op). Under torchrun, rank 0
listens and the other ranks follow its requests (see dist.py).
"""

import argparse
import os
import socket
import sys

from . import PROTOCOL_VERSION
from .protocol import ProtocolError, read_frame, write_frame


def parse(argv):
    ap = argparse.ArgumentParser(prog="python3 -m torchworker", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a built-in checkpoint (.safetensors, or a directory holding model.safetensors) or an HF model directory")
    ap.add_argument("--listen", required=True, help="Unix socket path to listen on (rank 0)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or cuda:N (default cpu; under torchrun cuda:LOCAL_RANK)")
    ap.add_argument("--micro-batch-tokens", type=int, default=0, help="packed tokens per forward with gradient; the learner splits mini-batches by it (0 = no bound)")
    ap.add_argument("--logit-chunk", type=int, default=1024, help="tokens per chunk of the fp32 log-prob/entropy computation")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward")
    ap.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2 (torch >= 2.4)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    return ap.parse_args(argv)


def serve(conn, worker):
    while True:
        try:
            msg = read_frame(conn)
        except EOFError:
            return
        if msg.get("op") == "shutdown":
            write_frame(conn, {"ok": True})
            return
        try:
            reply = worker.handle(msg)
        except ProtocolError as e:
            write_frame(conn, {"ok": False, "error": str(e), "fatal": True})
            return
        write_frame(conn, reply)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from . import dist
    from .worker import Worker

    comm = dist.init(fsdp=args.fsdp) if dist.under_torchrun() else None
    device = args.device
    if comm is not None and device == "cuda":
        device = "cuda:%d" % int(os.environ.get("LOCAL_RANK", "0"))
    try:
        worker = Worker(args.model, device=device, micro_batch_tokens=args.micro_batch_tokens,
                        logit_chunk=args.logit_chunk, checkpointing=args.gradient_checkpointing,
                        comm=comm, fsdp=args.fsdp)
    except Exception as e:  # a clear start-up error on stderr, then a non-zero exit
        print("torchworker: cannot load model %s: %s" % (args.model, e), file=sys.stderr, flush=True)
        return 2
    if comm is not None and comm.rank != 0:
        dist.follow(comm, worker)
        return 0
    if os.path.exists(args.listen):
        os.remove(args.listen)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.listen + ".tmp")
    srv.listen(1)
    os.rename(args.listen + ".tmp", args.listen)  # the path appears only once we listen
    print("torchworker: protocol %d, %s model on %s, listening on %s" % (PROTOCOL_VERSION, worker.arch, device, args.listen),
          file=sys.stderr, flush=True)
    try:
        conn, _ = srv.accept()
        with conn:
            if comm is not None:
                dist.lead(comm, worker, conn, serve)
            else:
                serve(conn, worker)
    finally:
        srv.close()
        if os.path.exists(args.listen):
            os.remove(args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
