"""Where masic stands against PyTorch and Norse: kernel times, whole-model latency and peak RSS, spike rates.

Measures, in one run, on the host (x86_64 target), batch 1, float32, with --threads threads on every side and, with
--one-thread (the default), again on one thread (a thread pool on a machine other processes keep busy loses whole
scheduler slices waiting for its workers, on either side; one thread shows the kernels' own speed):

1. Kernels. Every distinct kernel of the compiled models (`masic.codegen.lower.lower` of the planned graph: the
   kernels the artifact links), built by TVM (`masic.codegen.build.build_object`) into one shared library with
   runtime/parallel.c and a small C harness that calls a kernel back to back and reads the clock around the loop (the
   loader calls kernels the same way; no ctypes call inside the timed loop). The same op runs in PyTorch in its own
   process (torch.set_num_threads, torch.inference_mode, eager): F.conv2d, F.linear, pooling, `a + b`, copies, and
   for neuron updates Norse's functional step (`lif_feed_forward_step`, ...) and, as a second figure, the family's
   own update (`masic.ir.neurons`) in eager tensor ops (`torch_arith`). Each time is the best of batches of
   back-to-back calls (--kernel-seconds per kernel and side), so weights that fit the caches stay there. The kernels
   come from the models of part 2 and from --kernel-models (default: MobileNetV2 for grouped, depthwise, strided and
   1x1 convs and residual adds, and MobileNetV2 under a 2MB budget for sliced layers and concat copies). Printed per
   shape and per type as masic / torch: geometric mean, worst shape, and weighted by the calls per inference of the
   models that use the kernel.
2. Whole models, batch 1, one inference: the trained digits example (examples/digits.py: WORKDIR/models/digits.pt
   is reused, else trained with the per-step loss) on its first held-out digit, T=16; Norse ConvNet4 at its default
   1x28x28 input, T=16 (Linear weights x4, as tests.zoo_models.convnet4 does at 16x16); Norse vgg11
   (tests.zoo_models:vgg11) at 3x32x32, T=4, and (--budget-models) the same under a 32MB budget; the zoo models on
   a uniform [0, 20) input sequence (seed 0). Each is saved with torch.save, compiled by `masic compile MODEL.pt
   --target x86_64 --timesteps T --input-shape ... [--budget B]` and run as `OUT/model --input x.npy --threads N
   --no-exit`: single-sample runs (their peak RSS: the loader's VmHWM) and labelled runs of the sample repeated
   (warm), the better of the two bests compared. Norse runs in its own process (inference_mode; the digits
   SequentialState step by step, the zoo models as one call of the time-lifted model over the (T, 1, ...) input):
   first call, then best and median after two warm-up calls; its peak RSS (VmHWM), its RSS right after importing
   torch and norse, and ru_maxrss (which Linux carries over from the process that started it: an upper bound).
   Speedup = Norse / masic on --threads threads (the issue's figure), on one thread, and with each side in its
   better configuration. With perf installed, `perf record` of a labelled run after its load phase attributes the
   CPU samples to the artifact's kernels (the parallel closures TVM emits have no symbol: they are found from the
   exported kernel that launches them), the thread pool, the rest of the program and the OS.
3. Spikes. The reference interpreter (`masic.ir.interpret.run`) on the benchmark input, recording every value: the
   spike rate (fraction of ones, over all steps) of every spiking layer and of the input of every conv / dense fed
   by spikes; the plan's bytes (arena, lower bound, activation buffers, spike tensors, peak of live activations)
   as planned now (spikes bit-packed where only accumulating dense layers read them, else one byte each), next to
   the same graph with every spike one byte and the model planned with every value float32. For each conv / dense
   fed by spikes, a prototype accumulate-only C kernel (builds the list of input spikes, then adds the weights of
   each spike; the same thread pool) timed at that layer's measured rate against masic's kernel on the same input
   (the outputs are checked to agree): for dense layers of spikes that is masic's own accumulate-only kernel, also
   timed against its multiplying twin (masic's dense kernel reading the same spikes as bytes) and against its twin
   reading the spikes the other way, bytes or bits (checked to give the same floats); and the model's kernel time
   projected from per-kernel times x calls per inference.
4. Where masic's time goes, per model: per-kernel best time x calls per inference next to the measured time, and
   the perf profiles. Everything goes to WORKDIR/speed.json.

The load average before and after is printed and saved; rerun when figures look unstable. MiB = 2^20 bytes.

The package: `models` (the models, their inputs and planned graphs, through `masic.driver`), `harness` and
`harness.c` (the kernels linked with the C timing loop and the accumulate-only prototypes), `kernels` (part 1),
`twins` (the kernels timed next to a model's own: parts 1b, 1c and 3), `whole` (parts 2 and 4), `spikes` (part 3),
`torch_worker` and `torch_arith` (the PyTorch side, in its own process; the neuron families run in torch),
`common` (timing, workers), `__main__` (the parts in order).

    python -m bench.speed [--workdir build/speed] [--threads 2] [--no-one-thread] [--runs 5] [--kernel-seconds 0.3]
                          [--model-seconds 2] [--models digits,convnet4,vgg11] [--budget-models vgg11@32MB]
                          [--kernel-models mobilenet_v2,mobilenet_v2@2MB] [--skip kernels,models,spikes]
"""
