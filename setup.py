"""The compiled send path (sfu/rtc/_fastpath.c, linking Debian's libsrtp2-dev).

Everything else is in pyproject.toml. The extension is optional: without a C compiler, the
Python headers or libsrtp2's headers, `pip install` warns and goes on, and the server uses the
pure-Python path (sfu/rtc/fastpath.py logs which one at start).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sfu.rtc._fastpath",
            sources=["sfu/rtc/_fastpath.c"],
            libraries=["srtp2"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
