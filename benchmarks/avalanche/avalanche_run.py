"""Runs inside the Avalanche venv: Split-FashionMNIST naive / ER-500 with Avalanche, printing one JSON line per
run with its training+evaluation seconds and final accuracy. Same setup as `lifelong run` (MLP 784-256-256-10,
SGD 0.01 momentum 0.9, batch 32, 1 epoch, 5 experiences x 2 classes in class order, ER: reservoir memory
500 and 32 replayed samples per step)."""

import argparse
import gzip
import json
import time
import warnings

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")


def idx(path):
    raw = gzip.open(path).read()
    nd = raw[3]
    shape = np.frombuffer(raw[4:4 + 4 * nd], dtype=">u4")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd).reshape(shape)


class Tensors(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.targets = y.tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def main():
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    from avalanche.training.supervised import Naive

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--runs", required=True, help="comma-separated strategy:seed pairs, e.g. naive:0,er:1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = args.data
    def split(images, labels):
        x = ((idx(f"{d}/{images}").reshape(-1, 784) / 255.0 - 0.2860) / 0.3530).astype(np.float32)
        return Tensors(torch.from_numpy(x), torch.from_numpy(idx(f"{d}/{labels}").astype(np.int64)))

    train = split("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test = split("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for item in args.runs.split(","):
        strategy, seed = item.split(":")
        torch.manual_seed(int(seed))
        bench = nc_benchmark(train, test, n_experiences=5, task_labels=False, shuffle=False, seed=int(seed),
                             fixed_class_order=list(range(10)))
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        plugins = []
        if strategy == "er":
            plugins.append(ReplayPlugin(mem_size=500, batch_size=32, batch_size_mem=32,
                                        storage_policy=ReservoirSamplingBuffer(max_size=500)))
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])
        cl = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                   criterion=nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=1, eval_mb_size=1000,
                   device="cpu", plugins=plugins, evaluator=evaluator)
        t = time.perf_counter()
        for exp in bench.train_stream:
            cl.train(exp, num_workers=0)
            res = cl.eval(bench.test_stream)
        seconds = time.perf_counter() - t
        acc = [v for k, v in res.items() if k.startswith("Top1_Acc_Stream")][0]
        print(json.dumps({"strategy": strategy, "seed": int(seed), "seconds": seconds, "final_accuracy": acc}),
              flush=True)


if __name__ == "__main__":
    main()
