from .base import Generation, Student

__all__ = ["Generation", "Student"]
