// What tests/browser/page.ts reports to tests/browser/run.ts, one message per call of `__report`.

/** The adapter the page runs on. */
export interface AdapterReport {
  readonly kind: "adapter";
  /** Vendor, architecture, device and description, as the adapter gives them. */
  readonly description: string;
  /** Whether the device has `shader-f16`. */
  readonly f16: boolean;
}

/** A check begins (the runner times it out from here). */
export interface StartReport {
  readonly kind: "start";
  readonly index: number;
  readonly family: string;
  readonly name: string;
}

/** A check's outcome. */
export interface ResultReport {
  readonly kind: "result";
  /** Its index among the checks the filter keeps. */
  readonly index: number;
  readonly family: string;
  readonly name: string;
  readonly status: "passed" | "failed" | "ignored";
  /** Milliseconds it ran. */
  readonly ms: number;
  /** What failed (the assertion's message: the max error and the first bad index). */
  readonly error?: string;
}

/** The device was lost after check `index`: the page stops. */
export interface LostReport {
  readonly kind: "lost";
  readonly index: number;
  readonly reason: string;
}

/** Every check ran; `total`: how many the filter kept. */
export interface DoneReport {
  readonly kind: "done";
  readonly total: number;
}

/** The page could not run (no WebGPU, a module that failed to load). */
export interface FatalReport {
  readonly kind: "fatal";
  readonly error: string;
}

/** One message of the page. */
export type Report =
  | AdapterReport
  | StartReport
  | ResultReport
  | LostReport
  | DoneReport
  | FatalReport;
