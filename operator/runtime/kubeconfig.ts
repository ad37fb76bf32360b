/**
 * A `KubeConfig` that pools connections. client-node builds a new undici Agent (with its own
 * keep-alive pool) for every request to a cluster with TLS settings or skip-verify, so a busy
 * client leaves thousands of idle sockets behind (EMFILE). This one keeps the first
 * dispatcher and hands it to every later request; every client in Spillway is built on it.
 */
import { KubeConfig, type RequestContext } from "@kubernetes/client-node";

export class PooledKubeConfig extends KubeConfig {
  private dispatcher?: ReturnType<RequestContext["getDispatcher"]>;

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const d = context.getDispatcher();
    if (!d) return;
    if (this.dispatcher) context.setDispatcher(this.dispatcher);
    else this.dispatcher = d;
  }
}
