"""Ask a question, then watch an answer arrive piece by piece.

RENTAHAL_URL=http://127.0.0.1:5000 RENTAHAL_API_KEY=rah_... python docs/examples/sdk_chat.py
"""

import asyncio

from rentahal.client import AsyncClient


async def main() -> None:
    async with AsyncClient.from_env() as client:
        assert client.user is not None
        print(f"connected as a {client.user['role']}")

        # The simple way: one call, one answer.
        answer = await client.chat("What is the capital of France?")
        print(f"answer: {answer}")

        # The handle way: the answer streams in while the worker writes it.
        handle = await client.submit("Tell me about the moon")
        pieces = [piece async for piece in handle.stream()]
        print(f"streamed {len(pieces)} pieces: {''.join(pieces)}")
        result = await handle.result()
        print(f"by {result.worker} in {result.processing_time:.2f} s for {result.cost:.4f}")


if __name__ == "__main__":
    asyncio.run(main())
