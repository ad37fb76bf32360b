/**
 * Spillway's version, as package.json has it (a test keeps the two equal). A constant rather
 * than a read of package.json: the sync bundle and the compiled files run without it.
 */
export const SPILLWAY_VERSION = "0.1.0";
