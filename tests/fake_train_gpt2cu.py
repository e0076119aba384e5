"""A stand-in for llm.c's train_gpt2cu (f1e2ace) for runner tests without a GPU.

Reads the same flags, prints llm.c-style step lines (rank 0 only), writes main.log, checkpoints
(model_%08d.bin, state_%08d_%05d.bin per rank, DONE_%08d) every -n steps and at the last step, honors -y 1
(resumes after the newest DONE, like llm.c), checks -d % (B*T*ranks) like llm.c's assert. Under mpirun it
reads the rank from OMPI_COMM_WORLD_RANK / _SIZE. Knobs (environment):
  FAKE_OOM_ABOVE_B=N     print llm.c's cudaCheck out-of-memory error and exit 1 before step 1 when B > N
  FAKE_RATES="B:r:tok_s,..."  tokens/s to report for a (B, recompute) (default 100000); ms = -d / tok_s
  FAKE_STEP_SLEEP=S      sleep S seconds per step (so a test can interrupt a running job)
  FAKE_TRAIN_STEP_SLEEP=S  the same, only in runs that write checkpoints (-n > 0): kitctl tune's short
                         measuring runs (-n 0) stay fast while a training run can be interrupted
  FAKE_PIDFILE=PATH      append "pid" per rank (to check that nothing is left running)
  FAKE_EXIT_EARLY=N      exit 0 after N steps, short of -x (a trainer that "succeeds" without finishing)
  FAKE_READS=PATH        append every file -i / -j expand to (glob, as llm.c's glob(3)) to PATH, one a line
"""
import glob
import os
import re
import sys
import time


def _flags(argv):
    """train_gpt2cu's argv as pairs (the last of a repeated flag wins, as in llm.c)."""
    return {argv[i]: argv[i + 1] for i in range(1, len(argv), 2)}


def _rates():
    rates = {}
    for item in filter(None, os.environ.get("FAKE_RATES", "").split(",")):
        b, rr, t = item.split(":")
        rates[(int(b), int(rr))] = float(t)
    return rates


def _resume_step(out, p0):
    """-y 1: the step after the newest DONE_%08d (0 without one)."""
    done = sorted(int(m.group(1)) for n in os.listdir(out) if (m := re.match(r"DONE_(\d{8})$", n)))
    if not done:
        return 0
    p0(f"| weight init method    | {'intermediate checkpoint':<50} |")
    return done[-1]


def _checkpoint(out, step, rank, nproc, p0):
    p0(f"Writing checkpoint at step {step}")
    if rank == 0:
        open(os.path.join(out, f"model_{step:08d}.bin"), "wb").write(b"m")
    open(os.path.join(out, f"state_{step:08d}_{rank:05d}.bin"), "wb").write(b"s")
    if rank == 0:
        time.sleep(0.05 * (nproc > 1))
        open(os.path.join(out, f"DONE_{step:08d}"), "w").close()


def _train(a, step, max_steps, ms, tok_s, log, rank, nproc, p0):
    """The step loop: val loss every -v, checkpoints every -n and at the end, one step line per step."""
    out, every, val_every = a.get("-o"), int(a.get("-n", 0)), int(a.get("-v", 20))
    sleep = float(os.environ.get("FAKE_STEP_SLEEP", "0"))
    if every > 0:
        sleep += float(os.environ.get("FAKE_TRAIN_STEP_SLEEP", "0"))
    resuming = step > 0
    while step <= max_steps:
        last = step == max_steps
        if step % val_every == 0 or last:
            p0("val loss 4.500000")
            if log:
                log.write(f"s:{step} tel:4.5000\n")
        if every > 0 and out and not resuming and ((step > 0 and step % every == 0) or last):
            _checkpoint(out, step, rank, nproc, p0)
        resuming = False
        if last:
            break
        if os.environ.get("FAKE_EXIT_EARLY") is not None and step >= int(os.environ["FAKE_EXIT_EARLY"]):
            return True         # exit 0 short of the last step (reproduce must not call that "done")
        loss = 11.0 - 0.01 * step
        p0(f"step {step + 1:4d}/{max_steps} | loss {loss:7.6f} (+0.00z)| norm {1.0:6.4f} (+0.00z)| "
           f"lr {6e-4:.2e} | {ms:.2f} ms | {-100.0:.1f}% bf16 MFU | {tok_s:.0f} tok/s")
        if log:
            log.write(f"s:{step} trl:{loss:.4f} lr:0.000600 norm:1.00\n")
            log.flush()
        if sleep:
            time.sleep(sleep)
        step += 1
    return False


def main(argv):
    a = _flags(argv)
    B, T, D = int(a.get("-b", 4)), int(a.get("-t", 1024)), int(a.get("-d", -1))
    r = int(a.get("-r", 1))
    out = a.get("-o")
    resume = int(a.get("-y", 0))
    max_steps = int(a.get("-x", -1))
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", 0))
    nproc = int(os.environ.get("OMPI_COMM_WORLD_SIZE", 1))
    if os.environ.get("FAKE_PIDFILE"):
        with open(os.environ["FAKE_PIDFILE"], "a") as f:
            f.write(f"{os.getpid()}\n")

    def p0(*x):
        if rank == 0:
            print(*x, flush=True)

    if D == -1:
        D = B * T * nproc
    assert D % (B * T * nproc) == 0, "total_batch_size % tokens_per_fwdbwd"
    for pat in (a["-i"], a["-j"]):
        found = glob.glob(pat)
        if not found:
            print(f"Error: no files found matching the pattern: {pat}", flush=True)
            return 1
        if os.environ.get("FAKE_READS"):
            with open(os.environ["FAKE_READS"], "a") as f:
                f.write("".join(p + "\n" for p in sorted(found)))
    p0("| device                | FAKE GPU                                           |")
    hs = os.path.exists("dev/data/hellaswag/hellaswag_val.bin")
    p0(f"| run hellaswag         | {'yes' if hs and int(a.get('-h', 0)) else 'no':<50} |")
    p0(f"| tokenizer             | {'yes' if os.path.exists('gpt2_tokenizer.bin') else 'no':<50} |")
    oom_above = os.environ.get("FAKE_OOM_ABOVE_B")
    if oom_above is not None and int(oom_above) < B:
        print("[CUDA ERROR] at file train_gpt2.cu:385:\nout of memory", flush=True)
        return 1
    tok_s = _rates().get((B, r), 100000.0)
    step = 0
    if out:
        os.makedirs(out, exist_ok=True)
    if resume and out:
        step = _resume_step(out, p0)
    log = open(os.path.join(out, "main.log"), "a" if resume else "w") if out and rank == 0 else None
    if _train(a, step, max_steps, D / tok_s * 1000, tok_s, log, rank, nproc, p0):
        return 0
    p0("total average iteration time: 1.0 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
