// Records what a Pulumi program declares, through `pulumi.runtime.setMocks`. Call
// `installMocks` BEFORE importing the program module (the SDK reads the mock monitor when
// resources register).
import * as pulumi from "@pulumi/pulumi";

export interface DeclaredResource {
  type: string;
  name: string;
  inputs: Record<string, any>;
}

export interface MockRecorder {
  resources: DeclaredResource[];
  calls: Array<{ token: string; inputs: Record<string, any> }>;
  ofType(type: string): DeclaredResource[];
  one(type: string): DeclaredResource;
}

export async function installMocks(
  project: string,
  stack: string,
  opts: {
    call?: (token: string, inputs: Record<string, any>) => Record<string, any>;
    state?: (type: string, name: string, inputs: Record<string, any>) => Record<string, any>;
  } = {},
): Promise<MockRecorder> {
  const rec: MockRecorder = {
    resources: [],
    calls: [],
    ofType: (type) => rec.resources.filter((r) => r.type === type),
    one: (type) => {
      const found = rec.ofType(type);
      if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
      return found[0]!;
    },
  };
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        rec.resources.push({ type: args.type, name: args.name, inputs: args.inputs });
        return {
          id: `${args.name}-id`,
          state: { ...args.inputs, ...(opts.state?.(args.type, args.name, args.inputs) ?? {}) },
        };
      },
      call(args) {
        rec.calls.push({ token: args.token, inputs: args.inputs });
        return opts.call?.(args.token, args.inputs) ?? {};
      },
    },
    project,
    stack,
    false,
  );
  return rec;
}

export function resolved<T>(output: pulumi.Output<T> | T): Promise<T> {
  return new Promise((resolve) => pulumi.output(output).apply((v) => resolve(v as T)));
}

/** Lets every pending registration reach the mock monitor. */
export async function settle(outputs: Record<string, unknown>): Promise<void> {
  for (const v of Object.values(outputs)) {
    if (Array.isArray(v)) await Promise.all(v.map((x) => resolved(x)));
    else await resolved(v as pulumi.Output<unknown>);
  }
}
