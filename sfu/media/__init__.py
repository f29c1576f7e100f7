"""Pure packet logic: no aiortc, no aiohttp, no asyncio. Time is always an argument."""
