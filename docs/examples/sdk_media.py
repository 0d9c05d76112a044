"""Speech, pictures and sight: speak a sentence, hear it back, paint a picture, look at it.

RENTAHAL_URL=... RENTAHAL_API_KEY=... python docs/examples/sdk_media.py [output-dir]
"""

import asyncio
import sys
import tempfile
from pathlib import Path

from rentahal.client import AsyncClient


async def main(out_dir: Path) -> None:
    async with AsyncClient.from_env() as client:
        wav = await client.speak("Hello from RENT A HAL")
        (out_dir / "hello.wav").write_bytes(wav)
        print(f"spoke {len(wav)} bytes of WAV")

        heard = await client.transcribe(wav)
        print(f"heard: {heard}")

        png = await client.imagine("a lighthouse at dawn", width=512, height=512)
        (out_dir / "lighthouse.png").write_bytes(png)
        print(f"painted {out_dir / 'lighthouse.png'}")

        seen = await client.vision("What is in this picture?", png)
        print(f"seen: {seen}")

        # A spoken question, answered in words and aloud.
        result = await client.speech(wav, speak=True)
        print(f"asked: {result.transcript}")
        print(f"replied: {result.text} ({len(result.audio or b'')} bytes of audio)")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())))
