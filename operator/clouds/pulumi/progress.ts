/**
 * Progress of an `up` or `destroy` from the engine's event stream (the structured form of
 * what the CLI prints): which resource is being worked on, how many are done out of those the
 * program has declared so far (Pulumi learns the total only as the program runs), and the
 * error diagnostics kept for classification. Progress messages are built from resource types
 * and names only — never from diagnostics or property values, which may carry secrets.
 */
import type { EngineEvent } from "@pulumi/pulumi/automation/index.js";
import type { ProvisionProgress } from "../../ports/provisioner.ts";

const VERB: Record<string, [string, string]> = {
  create: ["creating", "created"],
  update: ["updating", "updated"],
  delete: ["deleting", "deleted"],
  replace: ["replacing", "replaced"],
  "create-replacement": ["creating replacement", "created replacement"],
  "delete-replaced": ["deleting replaced", "deleted replaced"],
  read: ["reading", "read"],
  refresh: ["refreshing", "refreshed"],
  same: ["checking", "unchanged"],
};

/** `urn:pulumi:stack::project::oci:core/vcn:Vcn::vcn` → `oci:core/vcn:Vcn vcn`. */
export function describeUrn(urn: string): string {
  const parts = urn.split("::");
  const type = parts[2]?.split("$").pop() ?? "resource";
  const name = parts[3] ?? "";
  return `${type} ${name}`.trim();
}

/** The stack itself and provider instances are bookkeeping, not cloud resources. */
function counts(type: string): boolean {
  return type !== "pulumi:pulumi:Stack" && !type.startsWith("pulumi:providers:");
}

export class ProgressTracker {
  private readonly declared = new Set<string>();
  private readonly finished = new Set<string>();
  /** Error-severity diagnostics, for classification (not for display as they are). */
  readonly errors: string[] = [];

  constructor(private readonly operation: string) {}

  /** Feeds one engine event; returns the progress to report, if this event changes it. */
  onEvent(e: EngineEvent): ProvisionProgress | undefined {
    if (e.diagnosticEvent && e.diagnosticEvent.severity === "error") {
      this.errors.push(e.diagnosticEvent.message);
      return undefined;
    }
    const pre = e.resourcePreEvent;
    if (pre && !pre.planning && counts(pre.metadata.type)) {
      this.declared.add(pre.metadata.urn);
      return this.report(`${VERB[pre.metadata.op]?.[0] ?? pre.metadata.op} ${describeUrn(pre.metadata.urn)}`);
    }
    const out = e.resOutputsEvent;
    if (out && !out.planning && counts(out.metadata.type)) {
      this.declared.add(out.metadata.urn);
      this.finished.add(out.metadata.urn);
      return this.report(`${VERB[out.metadata.op]?.[1] ?? out.metadata.op} ${describeUrn(out.metadata.urn)}`);
    }
    const failed = e.resOpFailedEvent;
    if (failed && counts(failed.metadata.type)) {
      return this.report(`failed to ${failed.metadata.op} ${describeUrn(failed.metadata.urn)}`);
    }
    if (e.summaryEvent) {
      const changes = Object.entries(e.summaryEvent.resourceChanges ?? {})
        .filter(([op, n]) => op !== "same" && (n ?? 0) > 0)
        .map(([op, n]) => `${n} ${VERB[op]?.[1] ?? op}`);
      const what = changes.length > 0 ? changes.join(", ") : "no changes";
      return this.report(
        `${this.operation} finished in ${Math.round(e.summaryEvent.durationSeconds)}s: ${what}`,
      );
    }
    return undefined;
  }

  private report(message: string): ProvisionProgress {
    return { message, resourcesDone: this.finished.size, resourcesTotal: this.declared.size };
  }
}
