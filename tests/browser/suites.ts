// What `deno task test:browser` runs: every kernel family's testOp suites (tests/ops/*.ts, the
// same lists tests/<family>_test.ts registers with Deno.test) and kernel checks (tests/_check.ts:
// fixture comparisons, exact flags; `*_CHECKS`), by the name of the Deno test file
// that registers them, and the models' PyTorch parity (tests/_models_parity.ts). No Deno API:
// tests/browser/page.ts bundles it for Chromium.
import type { KernelCheck } from "../_check.ts";
import type { OpSuite } from "../_op.ts";
import { ACTIVATION_SUITES } from "../ops/activation.ts";
import { BN_SUITES } from "../ops/batchnorm.ts";
import { BN_MERGE_WORKGROUP_CHECK, BN_STATS_CHECKS } from "../ops/batchnorm_stats.ts";
import { GRAD_SUMS_SUITES } from "../ops/batchnorm_grad_sums.ts";
import { DIRECT_SUITES } from "../ops/conv2d_direct.ts";
import { CONV2D_SUITES } from "../ops/conv2d_suites.ts";
import { AFFINE_SUITES, PREPARE_SUITES, RESIZE_SUITES } from "../ops/data.ts";
import { AFFINE_CHECKS } from "../ops/data_affine.ts";
import { DATA_CHECKS } from "../ops/data_checks.ts";
import { DW_SUITES } from "../ops/depthwise.ts";
import { FINITE_CHECKS } from "../ops/finite.ts";
import { OPTIM_CHECKS } from "../ops/optim.ts";
import { DROPOUT_SUITES } from "../ops/dropout.ts";
import {
  ACCUMULATE_SUITES,
  ADD_SUITES,
  CONCAT_SUITES,
  SPLIT_ACTIVATION_SUITES,
} from "../ops/elementwise.ts";
import { ACTIVATION_SUITES as GEMM_ACTIVATION_SUITES, GEMM_SUITES } from "../ops/gemm.ts";
import { HALF_SUITES, STRIDED_SUITES } from "../ops/gemm_f16.ts";
import { REDUCE_SUITES, SUM_ROWS_SUITES } from "../ops/gemm_reduce.ts";
import { ROW_GROUP_SUITES } from "../ops/gemm_rows.ts";
import { KSEG_SUITES } from "../ops/gemm_kseg.ts";
import { LOSS_SCALE_CHECKS } from "../ops/loss_scale.ts";
import { LRN_SUITES } from "../ops/lrn.ts";
import { GLOBAL_POOL_SUITES, POOL_SUITES } from "../ops/pool.ts";
import { PREDICT_CHECKS } from "../ops/predict.ts";
import { SGD_CHECKS, SGD_SUITES } from "../ops/sgd.ts";
import { CE_SUITES } from "../ops/softmax_ce.ts";
import { WORKGROUP_SUITES } from "../ops/workgroup_memory.ts";

/** A kernel family: the suites one Deno test file registers (`family`: its name less `_test.ts`). */
export interface Family {
  /** The Deno test file's name less `_test.ts` (what FILTER matches, as in `deno task test`). */
  readonly family: string;
  /** Its suites. */
  // deno-lint-ignore no-explicit-any
  readonly suites: readonly OpSuite<any>[];
  /** Its kernel checks that are not op cases (fixture comparisons, exact flags): tests/_check.ts. */
  readonly checks?: readonly KernelCheck[];
}

/** Every kernel family's suites, in the order they run. */
export const FAMILIES: readonly Family[] = [
  { family: "activation", suites: ACTIVATION_SUITES },
  {
    family: "elementwise",
    suites: [
      ...ADD_SUITES,
      ...ACCUMULATE_SUITES,
      ...CONCAT_SUITES,
      ...SPLIT_ACTIVATION_SUITES,
    ],
  },
  { family: "dropout", suites: DROPOUT_SUITES },
  { family: "softmax_ce", suites: CE_SUITES },
  { family: "sgd", suites: SGD_SUITES, checks: SGD_CHECKS },
  { family: "optim", suites: [], checks: OPTIM_CHECKS },
  { family: "loss_scale", suites: [], checks: LOSS_SCALE_CHECKS },
  { family: "finite", suites: [], checks: FINITE_CHECKS },
  { family: "predict", suites: [], checks: PREDICT_CHECKS },
  { family: "lrn", suites: LRN_SUITES },
  { family: "pool", suites: [...POOL_SUITES, ...GLOBAL_POOL_SUITES] },
  { family: "depthwise", suites: DW_SUITES },
  { family: "batchnorm", suites: BN_SUITES, checks: BN_STATS_CHECKS },
  { family: "batchnorm_grad_sums", suites: GRAD_SUMS_SUITES },
  { family: "data_kernels", suites: [...PREPARE_SUITES, ...RESIZE_SUITES], checks: DATA_CHECKS },
  { family: "data_kernels_affine", suites: AFFINE_SUITES, checks: AFFINE_CHECKS },
  {
    family: "gemm",
    suites: [
      ...GEMM_SUITES,
      ...GEMM_ACTIVATION_SUITES,
      ...HALF_SUITES,
      ...STRIDED_SUITES,
      ...ROW_GROUP_SUITES,
      ...KSEG_SUITES,
      ...SUM_ROWS_SUITES,
      ...REDUCE_SUITES,
    ],
  },
  { family: "conv2d", suites: CONV2D_SUITES },
  { family: "conv2d_direct", suites: DIRECT_SUITES },
  { family: "workgroup_memory", suites: WORKGROUP_SUITES, checks: [BN_MERGE_WORKGROUP_CHECK] },
];
