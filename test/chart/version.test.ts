/**
 * One version everywhere it is written: package.json, operator/version.ts (the stores'
 * User-Agent), the chart's appVersion and the default agent image's tag.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { DEFAULT_AGENT_IMAGE } from "../../operator/controllers/remote/manifests.ts";
import { USER_AGENT } from "../../operator/dataplane/transport.ts";
import { SPILLWAY_VERSION } from "../../operator/version.ts";
import { ROOT } from "../helpers/examples.ts";

test("package.json, operator/version.ts, the chart and the agent image name the same version", () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  const chart = parse(readFileSync(join(ROOT, "charts", "spillway", "Chart.yaml"), "utf8")) as {
    appVersion: string;
  };
  expect(SPILLWAY_VERSION).toBe(pkg.version);
  expect(chart.appVersion).toBe(pkg.version);
  expect(DEFAULT_AGENT_IMAGE.split(":").pop()).toBe(pkg.version);
  const version = pkg.version.replaceAll(".", "\\.");
  expect(USER_AGENT).toMatch(new RegExp(`^spillway/${version} \\(node/\\d+\\.\\d+\\.\\d+; \\w+\\)$`));
});
