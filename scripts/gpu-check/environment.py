#!/usr/bin/env python3
"""What the GPU check runs on (scripts/gpu-check.sh, step environment), as the step's result JSON.

The GPU (nvidia-smi), the CUDA compiler, cmake and ninja, and the Python that the build takes
libtorch from: its executable, torch and its CUDA, cuDNN and NCCL versions, where the wheel sits
(site-packages, which the build step checks the addon's libraries against), and transformers.
Runs without torch too (the CPU dry run): what is missing is reported, not fatal.

    python3 environment.py --result FILE
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys


def command_output(args):
    """First lines of a command's output, or None when it is missing or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"error: {error}"
    text = (done.stdout or done.stderr).strip()
    return text if done.returncode == 0 else f"exit {done.returncode}: {text[-500:]}"


def gpus():
    out = command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    if out is None or out.startswith(("error", "exit")):
        return {"nvidiaSmi": out, "devices": []}
    devices = []
    for line in out.splitlines():
        name, driver, memory, capability = [x.strip() for x in line.split(",")]
        devices.append({"name": name, "driver": driver, "memory": memory, "computeCapability": capability})
    return {"nvidiaSmi": "ok", "devices": devices}


def torch_versions():
    try:
        import torch
    except Exception as error:  # not installed, or a broken wheel: say which
        return {"importable": False, "error": f"{type(error).__name__}: {error}"}
    info = {
        "importable": True,
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudaAvailable": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "package": os.path.dirname(torch.__file__),
        "sitePackages": os.path.dirname(os.path.dirname(torch.__file__)),
        "cmakePrefixPath": torch.utils.cmake_prefix_path,
    }
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
        info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
        info["deviceCount"] = torch.cuda.device_count()
        info["deviceName"] = torch.cuda.get_device_name(0)
        info["deviceCapability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["deviceMemoryBytes"] = torch.cuda.get_device_properties(0).total_memory
    return info


def transformers_version():
    try:
        import transformers
    except Exception as error:
        return {"importable": False, "error": f"{type(error).__name__}: {error}"}
    return {"importable": True, "version": transformers.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    nvcc = command_output(["nvcc", "--version"])
    result = {
        "status": "ok",
        "gpu": gpus(),
        "python": {"executable": sys.executable, "version": platform.python_version()},
        "torch": torch_versions(),
        "transformers": transformers_version(),
        "nvcc": nvcc.splitlines()[-1] if nvcc else None,
        "cmake": (command_output(["cmake", "--version"]) or "").splitlines()[0] or None,
        "ninja": command_output(["ninja", "--version"]),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }
    tmp = args.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.result)


if __name__ == "__main__":
    main()
