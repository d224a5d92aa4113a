"""Run inside the LeRobot venv (scripts/install-lerobot.sh), not under pytest: load a dataset
directory with LeRobot's own `LeRobotDataset` and save what it returns, for the test to compare.

    .venv-lerobot/bin/python tests/lerobot_load.py DATASET_DIR OUT.npz

torchvision cannot be installed beside the CPU torch these machines carry (its wheels on the
package index are CUDA builds of torch's own version), and `lerobot.datasets` imports it only
for PIL-image features and for its deprecated PyAV reader; video frames are decoded by
torchcodec, LeRobot's default decoder. So a stand-in module takes torchvision's place here, and
any use of it raises: the frames the test compares cannot have come through it.
"""
import sys
import types

import numpy as np


def _stand_in_torchvision() -> None:
    import importlib.machinery

    def unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is not installed in the LeRobot test venv")

    def attribute(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return unavailable

    root = types.ModuleType("torchvision")
    root.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    root.__getattr__ = attribute  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__getattr__ = attribute  # type: ignore[attr-defined]
    v2 = types.ModuleType("torchvision.transforms.v2")
    v2.__getattr__ = attribute  # type: ignore[attr-defined]
    root.transforms, transforms.v2 = transforms, v2
    sys.modules.update({"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.v2": v2})


def main(root: str, out: str) -> None:
    _stand_in_torchvision()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("worldenv/export", root=root, video_backend="torchcodec")
    items = [dataset[i] for i in range(len(dataset))]
    image = dataset.meta.camera_keys[0]
    frames = [(it[image].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for it in items]  # (H, W, 3) each
    np.savez(out, frames=np.stack(frames),
             actions=np.stack([it["action"].numpy() for it in items]),
             state=np.stack([it["observation.state"].numpy() for it in items]),
             p_done=np.array([float(it["p_done"]) for it in items]),
             episode_index=np.array([int(it["episode_index"]) for it in items]),
             tasks=np.array([it["task"] for it in items]), camera_keys=np.array(dataset.meta.camera_keys),
             fps=dataset.fps, num_episodes=dataset.num_episodes)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
