// The REST client: JSON in and out, the bearer token, and the error envelope as `ApiError`.
// A 401 on an authenticated call means the token was revoked or expired: the session ends.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

interface Hooks {
  token: () => string | null;
  unauthorized: () => void;
}

let hooks: Hooks = { token: () => null, unauthorized: () => {} };

export function configureApi(h: Hooks) {
  hooks = h;
}

export async function api<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const bearer = token ?? hooks.token();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let resp: Response;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "NETWORK", "The server cannot be reached");
  }
  const text = await resp.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const err = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })?.error;
    if (resp.status === 401 && bearer && !path.startsWith("/api/auth/login")) hooks.unauthorized();
    throw new ApiError(resp.status, err?.code ?? "HTTP_" + resp.status, err?.message ?? resp.statusText, err?.details ?? {});
  }
  return json as T;
}

export const get = <T>(path: string) => api<T>("GET", path);
export const post = <T>(path: string, body: unknown = {}) => api<T>("POST", path, body);
export const put = <T>(path: string, body: unknown) => api<T>("PUT", path, body);
export const del = <T>(path: string) => api<T>("DELETE", path);

/// A human-readable line for an error (validation errors name their field).
export function describe(e: unknown): string {
  if (e instanceof ApiError) {
    const field = e.details?.field;
    const reason = e.details?.reason;
    if (field && reason) return `${field}: ${reason}`;
    return e.message;
  }
  return String(e);
}
