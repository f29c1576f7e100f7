"""The compiled send path (sfu/rtc/_fastpath.c, linking Debian's libsrtp2-dev) and the compiled
twins of the per-stream media state (sfu/rtc/_media.c, declared in sfu/rtc/_media.h).

Everything else is in pyproject.toml. The extension is optional: without a C compiler, the
Python headers or libsrtp2's headers, `pip install` warns and goes on, and the server uses the
pure-Python path (sfu/rtc/fastpath.py logs which one at start).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sfu.rtc._fastpath",
            sources=["sfu/rtc/_fastpath.c", "sfu/rtc/_media.c"],
            include_dirs=["sfu/rtc"],
            depends=["sfu/rtc/_media.h"],
            libraries=["srtp2"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
