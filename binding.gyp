# For tools that only know node-gyp (npm's default build of a package that has a binding.gyp,
# prebuild tooling): it delegates to CMake through scripts/setup.js and duplicates nothing.
{
  "targets": [
    {
      "target_name": "octo_native_cmake",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/octo_native.node"],
          "action": ["node", "scripts/setup.js"]
        }
      ]
    }
  ]
}
