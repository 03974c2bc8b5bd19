/**
 * jest: TypeScript tests under test/, compiled by ts-jest (type errors fail the test).
 * hyparquet ships only ES modules: ts-jest turns them into CommonJS for the test sandbox.
 */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json" }],
    "^.+\\.js$": ["ts-jest", { tsconfig: { allowJs: true, module: "commonjs", target: "ES2022" } }],
  },
  // scripts/ is plain CommonJS run by node itself (test/setup.test.ts requires setup.js).
  transformIgnorePatterns: ["/node_modules/(?!(hyparquet|hyparquet-writer)/)", "<rootDir>/scripts/"],
  testTimeout: 120000,
};
