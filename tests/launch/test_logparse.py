"""Metrics read from printed lines: real log lines of well-known public training scripts,
copied verbatim (or printed with their own format strings), not written to fit the patterns."""

import io
import math
import threading
import time
from types import SimpleNamespace

import pytest

from recorder.errors import LaunchError
from recorder.logparse import MetricLines, MetricParser, compile_pattern, number


def parse(line, *patterns, defaults=True, is_secret=None):
    parser = MetricParser(lambda *a: None, [compile_pattern(p) for p in patterns], defaults,
                          is_secret=is_secret)
    return parser.parse(line)


# pytorch/examples, word_language_model/main.py: its two format strings, verbatim
WLM_BATCH = ('| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | '
             'loss {:5.2f} | ppl {:8.2f}')
WLM_EPOCH = ('| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | '
             'valid ppl {:8.2f}')
WLM_END = '| End of training | test loss {:5.2f} | test ppl {:8.2f}'


def test_word_language_model_format_strings():
    line = WLM_BATCH.format(2, 50, 389, 20.0, 7.97, 6.12, 453.61)
    assert line == "| epoch   2 |    50/  389 batches | lr 20.00 | ms/batch  7.97 | loss  6.12 | ppl   453.61"
    assert parse(line) == [("epoch", 2), ("lr", 20.0), ("ms/batch", 7.97), ("loss", 6.12),
                           ("ppl", 453.61)]
    line = WLM_EPOCH.format(1, 28.25, 6.47, 645.2)
    assert parse(line) == [("time", 28.25), ("valid loss", 6.47), ("valid ppl", 645.2)]
    assert parse(WLM_END.format(4.99, 147.03)) == [("test loss", 4.99), ("test ppl", 147.03)]


# Real output of a copy of pytorch/examples word_language_model/main.py, verbatim from
# pypi-data/pypi-mirror-359: packages/nlpia2/nlpia2-0.2.0-py3-none-any.whl/nlpia2/ch08/rnn_word/
# checkpoint_notes/model_LSTM_nlayers_2_epochs_12_nhid_200_batch_size_20_bptt_35_nlayers.md
WLM_OUTPUT = """\
Namespace(annealing_loss_improvement_pct=1.0, batch_size=20, bptt=35, clip=0.25, cuda=True, data='./data/wikitext-2', device='', dropout=0.2, dry_run=False, emsize=200, epochs=12, log_interval=200, lr=20, model='LSTM', nhead=2, nhid=200, nlayers=2, onnx_export='', save='model_LSTM_nlayers_2_epochs_12_nhid_200_batch_size_20_bptt_35_nlayers.pt', seed=1111, tied=False)
| epoch   1 |   200/ 2983 batches | lr 20.0000 | ms/batch 12.12 | loss  7.64 | ppl  2079.22
| epoch   1 |   400/ 2983 batches | lr 20.0000 | ms/batch 12.06 | loss  6.87 | ppl   960.57
-----------------------------------------------------------------------------------------
| end of epoch   1 | time: 36.93s | valid loss  5.53 | valid ppl   252.86
-----------------------------------------------------------------------------------------
"""


def test_word_language_model_real_output_and_steps():
    points = []
    parser = MetricParser(lambda name, value, step: points.append((name, value, step)))
    for line in WLM_OUTPUT.splitlines():
        parser.feed(line)
    by_name = {}
    for name, value, step in points:
        by_name.setdefault(name, []).append((step, value))
    assert by_name == {
        "epoch": [(0, 1), (1, 1)], "lr": [(0, 20.0), (1, 20.0)],
        "ms/batch": [(0, 12.12), (1, 12.06)], "loss": [(0, 7.64), (1, 6.87)],
        "ppl": [(0, 2079.22), (1, 960.57)], "time": [(0, 36.93)],
        "valid loss": [(0, 5.53)], "valid ppl": [(0, 252.86)],
    }  # the printed Namespace (the config) gives none, nor does "end of epoch"


# pytorch/examples, mnist/main.py: its two format strings, verbatim
MNIST_TRAIN = 'Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'
MNIST_TEST = '\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'


def test_mnist_format_strings():
    line = MNIST_TRAIN.format(1, 640, 60000, 1.0, 2.305134)
    assert parse(line) == [("Train Epoch", 1), ("Loss", 2.305134)]
    lines = MNIST_TEST.format(0.0337, 9890, 10000, 98.9).split("\n")
    assert [parse(line) for line in lines] == [[], [("Average loss", 0.0337)], []]
    # "Accuracy: 9890/10000" is a count out of a total, not a value: not read


# pytorch/examples, imagenet/main.py (the validate() print of an older version), verbatim
IMAGENET_TEST = ('Test: [{0}/{1}]\t'
                 'Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
                 'Loss {loss.val:.4f} ({loss.avg:.4f})\t'
                 'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t'
                 'Prec@5 {top5.val:.3f} ({top5.avg:.3f})')


def test_imagenet_tab_separated_meters():
    def meter(val, avg):
        return SimpleNamespace(val=val, avg=avg)
    line = IMAGENET_TEST.format(10, 196, batch_time=meter(0.25, 0.31), loss=meter(6.9, 6.95),
                                top1=meter(0.0, 0.1), top5=meter(0.5, 0.7))
    assert parse(line) == [("Time", 0.25), ("Loss", 6.9), ("Prec@1", 0.0), ("Prec@5", 0.5)]


# Real output, verbatim from keras-team/keras-io: examples/vision/md/mnist_convnet.md
KERAS_OUTPUT = """\
Epoch 1/15
422/422 [==============================] - 13s 29ms/step - loss: 0.7840 - accuracy: 0.7643 - val_loss: 0.0780 - val_accuracy: 0.9780
237/422 [===============>..............] - ETA: 7s - loss: 0.0398 - accuracy: 0.9877
Test loss: 0.023950600996613503
Test accuracy: 0.9922000169754028
"""


def test_keras_fit_progress_lines():
    lines = KERAS_OUTPUT.splitlines()
    assert parse(lines[0]) == []
    assert parse(lines[1]) == [("loss", 0.784), ("accuracy", 0.7643), ("val_loss", 0.078),
                               ("val_accuracy", 0.978)]
    assert parse(lines[2]) == [("ETA", 7), ("loss", 0.0398), ("accuracy", 0.9877)]
    assert parse(lines[3]) == [("Test loss", 0.023950600996613503)]
    assert parse(lines[4]) == [("Test accuracy", 0.9922000169754028)]


# huggingface/transformers, src/transformers/trainer_callback.py: ProgressCallback.on_log
# writes `str(logs)` (PrinterCallback prints `logs`), so the line is a dict's repr; these
# logs dicts are the Trainer's keys.
def test_huggingface_trainer_logged_dicts():
    logs = {"loss": 0.3818, "grad_norm": 0.1455276608467102, "learning_rate": 0.0,
            "epoch": 1.0}
    assert parse(str(logs)) == list(logs.items())
    logs = {"train_runtime": 8754.1218, "train_samples_per_second": 36.554,
            "train_steps_per_second": 1.142, "train_loss": 2.159679998397827, "epoch": 1.0}
    assert parse(str(logs)) == list(logs.items())
    assert parse(str({"learning_rate": 4.9e-05})) == [("learning_rate", 4.9e-05)]
    # values formatted as strings, as recent versions log them
    assert parse("{'loss': '3.41', 'grad_norm': '5.312', 'mean_token_accuracy': '0.5667'}") \
        == [("loss", 3.41), ("grad_norm", 5.312), ("mean_token_accuracy", 0.5667)]


# Real output of a Trainer's `log_metrics`, verbatim from evanhuang117/cse5525-research-project:
# results/conll/shuffle.md
HF_METRICS = """\
***** train metrics *****
  epoch                    =       30.0
  train_loss               =     0.0549
  train_runtime            = 2:01:44.85
  train_samples_per_second =     57.664
"""


def test_huggingface_log_metrics_block():
    found = [p for line in HF_METRICS.splitlines() for p in parse(line)]
    assert found == [("epoch", 30.0), ("train_loss", 0.0549),
                     ("train_samples_per_second", 57.664)]  # 2:01:44.85 is a clock


def test_a_lightning_progress_bar_line():
    # the tqdm postfix PyTorch Lightning's TQDMProgressBar draws, redrawn with \r
    line = ("\rEpoch 0:  50%|█████     | 469/938 [00:05<00:05, 88.91it/s, v_num=0, "
            "train_loss=0.250]\rEpoch 0: 100%|██████████| 938/938 [00:10<00:00, 88.91it/s, "
            "v_num=0, train_loss=0.123]")
    assert parse(line) == [("v_num", 0), ("train_loss", 0.123)]  # what the terminal shows


@pytest.mark.parametrize("line, found", [
    ("loss: nan, acc: -inf", [("loss", math.nan), ("acc", -math.inf)]),
    ("lr=1e-3 wd=0", [("lr", 0.001), ("wd", 0)]),
    ("epoch 3 train loss: 0.5 valid loss: 0.75", [("train loss", 0.5), ("valid loss", 0.75)]),
    ("loss 0.5", []),  # `name number` alone on a line, without a bar or tab: prose
    ("Downloading: 100%", [("Downloading", 100)]),
    ("step=10/100", []),
    ("--lr=0.1", []),  # an option echoed, not a metric
    ("at the end of training: 3", []),
    ("eta: 0:01:23", []),
    ("loss: 0.5.", [("loss", 0.5)]),
    ("", []),
    ("no numbers here: none", []),
])
def test_edge_cases(line, found):
    got = parse(line)
    assert [n for n, _ in got] == [n for n, _ in found]
    for (_, a), (_, b) in zip(got, found):
        assert a == b or (math.isnan(a) and math.isnan(b))
        assert type(a) is type(b)


def test_known_secrets_are_never_metrics():
    secret = "12345678"
    assert parse(f"pin: {secret} loss: 0.5", is_secret=lambda text: text == secret) \
        == [("loss", 0.5)]


def test_custom_patterns():
    line = WLM_EPOCH.format(1, 28.25, 6.47, 645.2)
    assert parse(line, r"val_loss=valid loss\s+(?P<value>\S+)", defaults=False) \
        == [("val_loss", 6.47)]
    assert parse(line, r"(?P<name>valid \w+)\s+(?P<value>[\d.]+)", defaults=False) \
        == [("valid loss", 6.47), ("valid ppl", 645.2)]
    assert parse("took 3.5s", r"elapsed=took (?P<value>\S+)", defaults=False) \
        == [("elapsed", 3.5)]  # the unit is dropped from the value group too
    assert parse("x: abc", r"(?P<name>x): (?P<value>\w+)", defaults=False) == []
    both = parse("| valid loss 6.47 |", r"val_loss=valid loss\s+(?P<value>\S+)")
    assert both == [("valid loss", 6.47), ("val_loss", 6.47)]  # added to the defaults


@pytest.mark.parametrize("spec, message", [
    ("(?P<value>\\d+", "not a regular expression"),
    ("loss (\\d+)", "no (?P<name>...) and (?P<value>...) groups"),
    ("loss=(\\d+)", "has no (?P<value>...) group"),
    ("x=(?P<value>[", "is not a regular expression"),
])
def test_bad_patterns_say_what_is_accepted(spec, message):
    with pytest.raises(LaunchError) as caught:
        compile_pattern(spec)
    assert message in str(caught.value) and "NAME=REGEX" in str(caught.value)


def test_number():
    assert number("6.47s") == 6.47 and number(" 12 ") == 12 and number("'0.5'") == 0.5
    assert number("abc") is None and number("1/2") is None


def test_the_stream_passes_everything_through_and_reads_complete_lines():
    seen = []
    out = io.StringIO()
    stream = MetricLines(out, seen.append)
    stream.write("loss: 0.")
    assert seen == []  # half a line is not read
    stream.write("5\nacc: 1\nrest")
    stream.writelines(["a\r", "b\n"])
    assert seen == ["loss: 0.5", "acc: 1", "b"]  # a line redrawn with \r: its last drawing
    stream.write("tail")
    stream.close()
    assert seen[-1] == "tail" and out.getvalue() == "loss: 0.5\nacc: 1\nresta\rb\ntail"
    stream.write("after close\n")
    assert seen[-1] == "tail" and out.getvalue().endswith("after close\n")
    assert stream.getvalue  # anything else is the stream's


def test_a_failing_reader_never_breaks_printing():
    def boom(line):
        raise RuntimeError("reader failed")
    out = io.StringIO()
    stream = MetricLines(out, boom)
    assert stream.write("x: 1\n") == 5
    assert out.getvalue() == "x: 1\n"


def test_lines_written_from_threads_stay_whole():
    seen = []
    stream = MetricLines(io.StringIO(), seen.append)

    def writer(k):
        for i in range(500):
            stream.write(f"w{k}: {i}\n")
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 2000 and all(line.count(":") == 1 for line in seen)


def test_parsing_is_cheap_per_line():
    # not a timed test of speed (tests/bench/ is for that): a loose bound against a
    # pathological regex (catastrophic backtracking would take seconds per line)
    parser = MetricParser(lambda *a: None)
    lines = [WLM_BATCH.format(1, i, 2983, 20.0, 7.9, 6.1, 450.0) for i in range(2000)]
    lines += ["x" * 5000, "a " * 3000 + ": 1", "| " + "word " * 2000 + "1 |"]
    started = time.perf_counter()
    for line in lines:
        parser.feed(line)
    assert time.perf_counter() - started < 5.0
    assert parser.counts["loss"] == 2000
