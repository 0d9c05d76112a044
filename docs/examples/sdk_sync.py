"""The same client for code that is not async: scripts, notebooks, web apps.

RENTAHAL_URL=... RENTAHAL_API_KEY=... python docs/examples/sdk_sync.py
"""

from rentahal.client import SyncClient


def main() -> None:
    with SyncClient.from_env() as client:
        print(f"answer: {client.chat('What is the capital of Italy?', timeout=60)}")

        handle = client.submit("Count to three")
        print("streamed:", "|".join(handle.stream(timeout=60)))
        print(f"result: {handle.result(timeout=60).text}")

        history = client.previous_queries(limit=2)
        print(f"latest queries: {[q['prompt'] for q in history]}")


if __name__ == "__main__":
    main()
