from api.models import Category
from api.routers.crud import crud_router
from api.schemas import CategoryIn, CategoryUpdate

router = crud_router(Category, CategoryIn, CategoryUpdate, "categories")
