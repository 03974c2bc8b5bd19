#!/usr/bin/env node
// The report's browser test renders it in headless Chromium: Debian's `chromium` package,
// driven by playwright-core (which downloads no browser of its own). Run by `npm pretest`:
// installs the package when it is missing and we may (root + apt-get); otherwise prints the
// command to run. The browser test runs it too when chromium is missing, and fails with its
// words (it never skips).
"use strict";
const fs = require("node:fs");

const { aptUsable, aptInstall } = require("./apt");

const CHROMIUM = "/usr/bin/chromium";
const INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium";
const MISSING_MESSAGE = `${CHROMIUM} not found: the report's browser test needs Debian's chromium. Install it with:\n  ${INSTALL_COMMAND}`;

function ensureChromium() {
  if (fs.existsSync(CHROMIUM)) return true;
  if (!aptUsable()) {
    console.warn(`octo-native: ${MISSING_MESSAGE}`);
    return false;
  }
  console.log("octo-native: installing Debian's chromium for the report's browser test …");
  aptInstall(["chromium"]);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium but ${CHROMIUM} is still missing`);
  return true;
}

try {
  ensureChromium();
} catch (error) {
  // Not fatal here: the other tests can still run; the browser test fails with the reason.
  console.warn(`octo-native: ${error.message}\n${MISSING_MESSAGE}`);
}
