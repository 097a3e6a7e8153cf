"""A careful single-model PyTorch CPU loop for softmax regression, run by benchmarks/stacked.py
in an interpreter that has torch: in-memory tensors, index-shuffled batches, the gradient by
autograd, plain SGD. Prints seconds per training pass (the best of --repeats), one line.

    python benchmarks/torch_loop.py DATA.npz BATCH_SIZE [--repeats 3] [--threads N]
"""
import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("batch_size", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arrays = np.load(args.data)
    X, y = torch.from_numpy(arrays["X"]), torch.from_numpy(arrays["y"]).long()
    torch.manual_seed(0)
    weight = (torch.randn(10, X.shape[1]) * 0.01).requires_grad_()
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=0.1)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        order = torch.randperm(X.shape[0])
        for i in range(0, X.shape[0], args.batch_size):
            rows = order[i:i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(X[rows], weight, bias), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        best = min(best, time.perf_counter() - start)
    print(f"{best:.4f}")


if __name__ == "__main__":
    main()
