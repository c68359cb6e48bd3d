// An SVG of training curves per epoch, like d2l's Animator: train loss, train acc, test acc.

/** One epoch's metrics. */
export interface PlotPoint {
  readonly epoch: number;
  readonly loss: number;
  readonly trainAcc: number;
  readonly testAcc: number;
}

const SERIES = [
  { key: "loss", label: "train loss", color: "#1f77b4", dash: "" },
  { key: "trainAcc", label: "train acc", color: "#d62728", dash: "6 4" },
  { key: "testAcc", label: "test acc", color: "#2ca02c", dash: "2 3" },
] as const;

/** Renders the curves as a standalone SVG document. */
export function renderPlot(points: readonly PlotPoint[], options: { title?: string } = {}): string {
  const w = 480, h = 320, left = 50, right = 20, top = 30, bottom = 40;
  const maxEpoch = Math.max(1, ...points.map((p) => p.epoch));
  const maxY = Math.max(1, ...points.map((p) => p.loss).filter(Number.isFinite));
  const x = (e: number) => left + ((e - 0) / maxEpoch) * (w - left - right);
  const y = (v: number) => top + (1 - v / maxY) * (h - top - bottom);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
  ];
  if (options.title) {
    parts.push(`<text x="${w / 2}" y="18" text-anchor="middle">${escapeXml(options.title)}</text>`);
  }
  parts.push(
    `<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${h - bottom}" stroke="black"/>`,
  );
  for (let e = 1; e <= maxEpoch; e++) {
    parts.push(`<text x="${x(e)}" y="${h - bottom + 15}" text-anchor="middle">${e}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const v = (maxY * i) / 4;
    parts.push(
      `<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`,
      `<line x1="${left}" y1="${y(v)}" x2="${w - right}" y2="${y(v)}" stroke="#ddd"/>`,
    );
  }
  parts.push(`<text x="${(left + w - right) / 2}" y="${h - 8}" text-anchor="middle">epoch</text>`);
  SERIES.forEach((s, i) => {
    const pts = points.filter((p) => Number.isFinite(p[s.key]))
      .map((p) => `${x(p.epoch).toFixed(1)},${y(p[s.key]).toFixed(1)}`);
    if (pts.length) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" stroke-dasharray="${s.dash}" points="${
          pts.join(" ")
        }"/>`,
      );
    }
    const ly = top + 8 + i * 16;
    parts.push(
      `<line x1="${w - right - 110}" y1="${ly}" x2="${
        w - right - 85
      }" y2="${ly}" stroke="${s.color}" stroke-width="2" stroke-dasharray="${s.dash}"/>`,
      `<text x="${w - right - 80}" y="${ly + 4}">${s.label}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}
