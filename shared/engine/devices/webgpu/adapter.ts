/**
 * The one way this project asks for a WebGPU adapter: the high-performance
 * one, or null where there is none (no `navigator.gpu`, or no adapter).
 *
 * Deno's WebGPU probes the windowing system when it starts, and on a machine
 * with no session (a server, a container) that probe prints "error:
 * XDG_RUNTIME_DIR is invalid or not set" although compute needs no window.
 * Where neither XDG_RUNTIME_DIR nor a display is set, this points
 * XDG_RUNTIME_DIR at the temp folder first, so a worker's start stays quiet.
 *
 * @module
 */

/** The adapter, or null. */
export async function requestGpuAdapter(): Promise<GPUAdapter | null> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return null;
  quietWindowProbe();
  try {
    return await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    return null;
  }
}

/** Sets XDG_RUNTIME_DIR where it is unset and no display is configured (see the module doc). */
function quietWindowProbe(): void {
  try {
    const env = Deno.env.toObject();
    if (env.XDG_RUNTIME_DIR || env.WAYLAND_DISPLAY || env.DISPLAY) return;
    Deno.env.set("XDG_RUNTIME_DIR", env.TMPDIR || "/tmp");
  } catch {
    // No --allow-env: the probe may print its line; nothing else changes.
  }
}

/** The adapter's vendor, architecture, device and description, as one line. */
export function adapterName(adapter: GPUAdapter): string {
  const i = adapter.info;
  return [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(" ") ||
    "unknown GPU";
}

/** Whether the adapter is a software one (Mesa's llvmpipe or lavapipe, SwiftShader, a fallback). */
export function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  const fallback = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return fallback === true || /llvmpipe|lavapipe|swiftshader|software/i.test(adapterName(adapter));
}
