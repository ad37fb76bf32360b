/**
 * Structured JSON logs (winston). Every line of a reconcile carries the same context fields
 * — controller, namespace, run, offer, provider — so one `jq` filter follows a run through
 * every controller. Missing context is logged as `null`, never dropped, so the shape is
 * stable. Secret-looking fields and values are redacted before a line is written.
 */
import type { Writable } from "node:stream";
import winston from "winston";
import { redactText, redactValue } from "./redact.ts";

export interface LogContext {
  controller?: string | null;
  namespace?: string | null;
  run?: string | null;
  offer?: string | null;
  provider?: string | null;
  [field: string]: unknown;
}

export const CONTEXT_FIELDS = ["controller", "namespace", "run", "offer", "provider"] as const;

export type Logger = winston.Logger;

export interface LoggerOptions {
  level?: string;
  /** Where lines go (default stdout); tests pass a stream that collects them. */
  stream?: Writable;
  /** Fields on every line of this logger (e.g. `{ component: "manager" }`). */
  defaults?: Record<string, unknown>;
}

const redactFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === "level") continue;
    const value = (info as Record<string, unknown>)[key];
    (info as Record<string, unknown>)[key] =
      key === "message" && typeof value === "string" ? redactText(value) : redactValue(value);
  }
  return info;
});

const errorFields = winston.format((info) => {
  const err = (info as Record<string, unknown>).err;
  if (err instanceof Error) {
    (info as Record<string, unknown>).err = {
      name: err.name,
      message: err.message,
      ...("statusCode" in err ? { statusCode: (err as { statusCode: unknown }).statusCode } : {}),
    };
  }
  return info;
});

export function createLogger(opts: LoggerOptions = {}): Logger {
  const transport = opts.stream
    ? new winston.transports.Stream({ stream: opts.stream })
    : new winston.transports.Console();
  return winston.createLogger({
    level: opts.level ?? process.env.SPILLWAY_LOG_LEVEL ?? "info",
    defaultMeta: opts.defaults,
    format: winston.format.combine(
      winston.format.timestamp(),
      errorFields(),
      redactFormat(),
      winston.format.json(),
    ),
    transports: [transport],
  });
}

/**
 * A child logger whose every line carries the five context fields (null when unknown)
 * plus any extra ones given.
 */
export function withContext(parent: Logger, ctx: LogContext): Logger {
  const fields: Record<string, unknown> = {};
  for (const f of CONTEXT_FIELDS) fields[f] = ctx[f] ?? null;
  for (const [k, v] of Object.entries(ctx)) if (!(k in fields)) fields[k] = v;
  return parent.child(fields);
}

/** A logger that writes nothing (library defaults, quiet tests). */
export function silentLogger(): Logger {
  return winston.createLogger({
    silent: true,
    transports: [new winston.transports.Console({ silent: true })],
  });
}
