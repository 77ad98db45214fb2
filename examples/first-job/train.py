"""A stand-in training loop: prints progress, then saves a result to $RESULT_DIR."""

import json
import os
import time
from pathlib import Path

EPOCHS = 5

loss = 1.0
for epoch in range(1, EPOCHS + 1):
    loss *= 0.6
    print(f"epoch {epoch}/{EPOCHS} loss {loss:.4f}", flush=True)
    time.sleep(0.2)

result_dir = Path(os.environ.get("RESULT_DIR", "results"))
result_dir.mkdir(parents=True, exist_ok=True)
(result_dir / "model.json").write_text(
    json.dumps({"epochs": EPOCHS, "loss": round(loss, 4)}) + "\n"
)
print(f"saved {result_dir / 'model.json'}", flush=True)
