/**
 * API errors as the real API server reports them: a `metav1.Status` body with reason,
 * details and causes, so client libraries (client-go, client-node, kubectl) classify them.
 */
import type { FieldError } from "../../api/schema/types.ts";

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
  }

  toStatus(): Record<string, unknown> {
    return {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

/** `trainingruns.spillway.dev` for a CRD resource, `pods` for a core one (as in messages). */
export interface ResourceRef {
  group: string;
  plural: string;
  kind?: string;
}

function qualified(r: ResourceRef): string {
  return r.group ? `${r.plural}.${r.group}` : r.plural;
}

export const errors = {
  notFound(r: ResourceRef, name: string): ApiError {
    return new ApiError(404, "NotFound", `${qualified(r)} "${name}" not found`, {
      name,
      group: r.group,
      kind: r.plural,
    });
  },
  alreadyExists(r: ResourceRef, name: string): ApiError {
    return new ApiError(409, "AlreadyExists", `${qualified(r)} "${name}" already exists`, {
      name,
      group: r.group,
      kind: r.plural,
    });
  },
  conflict(r: ResourceRef, name: string, why: string): ApiError {
    return new ApiError(
      409,
      "Conflict",
      `Operation cannot be fulfilled on ${qualified(r)} "${name}": ${why}`,
      {
        name,
        group: r.group,
        kind: r.plural,
      },
    );
  },
  invalid(r: ResourceRef & { kind: string }, name: string, causes: FieldError[]): ApiError {
    const list = causes.map((c) => `${c.path}: ${c.message}`);
    const joined = list.length === 1 ? list[0] : `[${list.join(", ")}]`;
    return new ApiError(
      422,
      "Invalid",
      `${r.kind}${r.group ? `.${r.group}` : ""} "${name}" is invalid: ${joined}`,
      {
        name,
        group: r.group,
        kind: r.kind,
        causes: causes.map((c) => ({ reason: c.type, message: c.message, field: c.path })),
      },
    );
  },
  badRequest(message: string, causes?: StatusCause[]): ApiError {
    return new ApiError(400, "BadRequest", message, causes ? { causes } : undefined);
  },
  forbidden(message: string): ApiError {
    return new ApiError(403, "Forbidden", message);
  },
  unauthorized(): ApiError {
    return new ApiError(401, "Unauthorized", "Unauthorized");
  },
  methodNotAllowed(message = "the server does not allow this method on the requested resource"): ApiError {
    return new ApiError(405, "MethodNotAllowed", message);
  },
  notAcceptable(message: string): ApiError {
    return new ApiError(406, "NotAcceptable", message);
  },
  unsupportedMediaType(type: string): ApiError {
    return new ApiError(
      415,
      "UnsupportedMediaType",
      `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got ${type}`,
    );
  },
  tooLarge(limit: number): ApiError {
    return new ApiError(
      413,
      "RequestEntityTooLarge",
      `the request body is larger than the limit of ${limit} bytes`,
    );
  },
  gone(message: string): ApiError {
    return new ApiError(410, "Expired", message);
  },
  tooManyRequests(retryAfterSeconds: number): ApiError {
    return new ApiError(
      429,
      "TooManyRequests",
      "the server has received too many requests and has asked us to try again later",
      {
        retryAfterSeconds,
      },
    );
  },
  internal(message: string): ApiError {
    return new ApiError(500, "InternalError", `Internal error occurred: ${message}`);
  },
  pathNotFound(): ApiError {
    return new ApiError(404, "NotFound", "the server could not find the requested resource");
  },
};
