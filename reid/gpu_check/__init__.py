"""The prepared GPU check: one command that proves the CUDA path of the project in a
few minutes whenever a GPU is lent, and a ``--tiny`` CPU rehearsal of the same code
that runs in the test suite.

    scripts/gpu_check.sh --market-root data/market1501-mini          # one GPU, under 8 minutes
    scripts/gpu_check.sh --device cpu --tiny --out /tmp/gpu_check     # the rehearsal, on the CPU

Five parts, each in its own process with its own time budget (scale.py), reported in
``OUT/report.md`` and ``OUT/report.json`` (report.py) as they finish:

1. environment.py   GPU name, driver, torch, CUDA and cuDNN versions
2. cuda_tests.py    the tests marked ``@pytest.mark.cuda``, pass/fail
3. speed.py         ``scripts/bench.py train`` with and without torch.compile; a full-size
                    BoT epoch against its FLOP floor
4. real_images.py   bot.yaml (bf16 and fp32) and the standard vs soft pair, from scratch on
                    the mini set, rank-1 / mAP and the comparison PNGs
5. determinism.py   ``train.deterministic: true``: kill + resume gives identical weights;
                    the mode's speed cost

runner.py runs the parts (part.py is a part's process), context.py is what a part works
with, runs.py fits training runs into their budget.
"""
